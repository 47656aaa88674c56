#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use super::*;
use crate::moto::MotoServer;

fn temp_dir(name: &str) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "flywheel-store-{name}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn s3(bucket: &str, key: &str) -> Location {
    Location::S3 {
        bucket: bucket.into(),
        key: key.into(),
    }
}

#[test]
fn parses_the_uri_forms() {
    assert_eq!(
        Location::parse("/data/iris.csv").unwrap(),
        Location::Local("/data/iris.csv".into())
    );
    assert_eq!(
        Location::parse("file:///data/iris.csv").unwrap(),
        Location::Local("/data/iris.csv".into())
    );
    assert_eq!(
        Location::parse("file://rel/dir").unwrap(),
        Location::Local("rel/dir".into())
    );
    assert_eq!(
        Location::parse("/odd/a://b").unwrap(),
        Location::Local("/odd/a://b".into())
    );
    assert_eq!(
        Location::parse("s3://bucket/a/b.csv").unwrap(),
        s3("bucket", "a/b.csv")
    );
    assert_eq!(
        Location::parse("s3://bucket/prefix/").unwrap(),
        s3("bucket", "prefix")
    );
    assert_eq!(Location::parse("s3://bucket").unwrap(), s3("bucket", ""));
    assert_eq!(
        Location::parse("s3://bucket/a/b").unwrap().to_string(),
        "s3://bucket/a/b"
    );
    assert_eq!(
        Location::parse("s3://b/models/v1")
            .unwrap()
            .join("model.onnx")
            .to_string(),
        "s3://b/models/v1/model.onnx"
    );
    assert_eq!(
        s3("b", "").join("x.json").to_string(),
        "s3://b/x.json",
        "joining onto a bucket root"
    );
    assert_eq!(
        Location::parse("s3://b/models/v1")
            .unwrap()
            .file_name()
            .as_deref(),
        Some("v1")
    );

    let error = Location::parse("gs://bucket/x").unwrap_err().to_string();
    assert_eq!(
        error,
        "unsupported scheme 'gs://' in gs://bucket/x: use a path, a file:// URI or an \
         s3://bucket/key URI"
    );
    for bad in ["s3:///key", "s3://b/a//c", "s3://b/../x", "file://", ""] {
        let error = Location::parse(bad).unwrap_err();
        assert!(
            matches!(error, StoreError::InvalidUri { .. }),
            "{bad}: {error}"
        );
    }
}

#[tokio::test]
async fn local_round_trip_is_atomic_and_names_missing_files() {
    let dir = temp_dir("local");
    let store = Store::from_env();
    let file = Location::Local(dir.join("a/b/c.json"));
    store
        .put(&file, Bytes::from_static(b"{\"n\":1}"))
        .await
        .unwrap();
    assert_eq!(&store.get(&file).await.unwrap()[..], b"{\"n\":1}");
    store.put(&file, Bytes::from_static(b"{}")).await.unwrap();
    assert_eq!(&store.get(&file).await.unwrap()[..], b"{}");
    assert_eq!(store.head(&file).await.unwrap().size, 2);
    // Nothing temporary is left beside the file.
    let names: Vec<String> = std::fs::read_dir(dir.join("a/b"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["c.json"]);

    let missing = Location::Local(dir.join("nope.csv"));
    let error = store.get(&missing).await.unwrap_err();
    assert!(error.is_not_found());
    assert_eq!(
        error.to_string(),
        format!("{} does not exist", dir.join("nope.csv").display())
    );

    // Folders: upload in order, download what is named.
    let from = temp_dir("local-from");
    std::fs::write(from.join("model.onnx"), b"graph").unwrap();
    std::fs::write(from.join("model.json"), b"card").unwrap();
    let target = Location::Local(dir.join("published"));
    store
        .upload_dir(&from, &["model.onnx", "model.json"], &target)
        .await
        .unwrap();
    let listed: Vec<String> = store
        .list(&target)
        .await
        .unwrap()
        .iter()
        .map(|l| l.file_name().unwrap())
        .collect();
    assert_eq!(listed, ["model.json", "model.onnx"]);
    let back = temp_dir("local-back");
    store
        .download_dir(&target, &["model.onnx", "model.json"], &back)
        .await
        .unwrap();
    assert_eq!(std::fs::read(back.join("model.onnx")).unwrap(), b"graph");
    store.delete(&target.join("model.onnx")).await.unwrap();
    store.delete(&target.join("model.onnx")).await.unwrap();
    assert!(
        store
            .list(&Location::Local(dir.join("none")))
            .await
            .unwrap()
            .is_empty()
    );
    for d in [dir, from, back] {
        std::fs::remove_dir_all(d).unwrap();
    }
}

#[test]
fn blocking_wrapper_works_without_a_runtime() {
    let dir = temp_dir("blocking");
    let store = BlockingStore::new(Store::from_env()).unwrap();
    let file = Location::Local(dir.join("x.bin"));
    store.put(&file, b"abc".to_vec()).unwrap();
    assert_eq!(&store.get(&file).unwrap()[..], b"abc");
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn s3_without_credentials_says_what_to_set() {
    // Explicit (empty) options: the test must not depend on the environment it runs in, and no
    // request may leave the machine.
    let store = Store::with_s3_options(Vec::<(String, String)>::new()).unwrap();
    let error = store
        .get(&Location::parse("s3://bucket/data/iris.csv").unwrap())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.starts_with("no s3 credentials to access s3://bucket/data/iris.csv: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"),
        "{error}"
    );
    let only_key = Store::with_s3_options([("aws_access_key_id", "k")]).unwrap();
    assert!(matches!(
        only_key.put(&s3("b", "k"), Bytes::new()).await,
        Err(StoreError::MissingCredentials { .. })
    ));
    let error = Store::with_s3_options([("aws_acess_key", "k")])
        .unwrap_err()
        .to_string();
    assert!(error.contains("aws_acess_key"), "{error}");
}

#[test]
fn https_endpoints_get_a_tls_client() {
    // Builds the TLS transport (system roots, ring) without contacting anything.
    let store = Store::with_s3_options([
        ("aws_access_key_id", "k"),
        ("aws_secret_access_key", "s"),
        ("aws_endpoint_url", "https://127.0.0.1:9"),
    ])
    .unwrap();
    store.check(&s3("bucket", "key")).unwrap();
    Store::from_env()
        .check(&Location::Local("x".into()))
        .unwrap();
}

#[tokio::test]
async fn s3_round_trip_on_moto() {
    let moto = MotoServer::start();
    moto.create_bucket("artifacts");
    let store = moto.store();

    let object = Location::parse("s3://artifacts/data/iris.csv").unwrap();
    store
        .put(&object, Bytes::from_static(b"a,b\n1,2\n"))
        .await
        .unwrap();
    assert_eq!(&store.get(&object).await.unwrap()[..], b"a,b\n1,2\n");
    let first = store.head(&object).await.unwrap();
    assert_eq!(first.size, 8);
    assert!(first.e_tag.is_some(), "{first:?}");
    store
        .put(&object, Bytes::from_static(b"a,b\n3,4\n"))
        .await
        .unwrap();
    let second = store.head(&object).await.unwrap();
    assert_ne!(first.e_tag, second.e_tag, "a new content has a new etag");

    // A missing object names its URI.
    let missing = Location::parse("s3://artifacts/data/nope.csv").unwrap();
    let error = store.get(&missing).await.unwrap_err();
    assert!(error.is_not_found(), "{error}");
    assert_eq!(
        error.to_string(),
        "s3://artifacts/data/nope.csv does not exist"
    );
    let error = store.head(&missing).await.unwrap_err();
    assert!(error.is_not_found(), "{error}");
    // So does a missing bucket.
    let error = store
        .get(&Location::parse("s3://no-such-bucket/x").unwrap())
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("s3://no-such-bucket/x"), "{error}");

    // Folders both ways.
    let from = temp_dir("s3-from");
    std::fs::write(from.join("model.onnx"), b"graph").unwrap();
    std::fs::write(from.join("model.json"), b"card").unwrap();
    let folder = Location::parse("s3://artifacts/models/v1").unwrap();
    store
        .upload_dir(&from, &["model.onnx", "model.json"], &folder)
        .await
        .unwrap();
    let listed: Vec<String> = store
        .list(&folder)
        .await
        .unwrap()
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        listed,
        [
            "s3://artifacts/models/v1/model.json",
            "s3://artifacts/models/v1/model.onnx"
        ]
    );
    let back = temp_dir("s3-back");
    store
        .download_dir(&folder, &["model.onnx", "model.json"], &back)
        .await
        .unwrap();
    assert_eq!(std::fs::read(back.join("model.json")).unwrap(), b"card");
    store.delete(&folder.join("model.onnx")).await.unwrap();
    store.delete(&folder.join("model.onnx")).await.unwrap();
    assert_eq!(store.list(&folder).await.unwrap().len(), 1);

    // Wrong credentials are refused by the service, and the message says which URI.
    let wrong = Store::with_s3_options([
        ("aws_access_key_id", "x"),
        ("aws_secret_access_key", "y"),
        ("aws_endpoint_url", &moto.endpoint()),
    ])
    .unwrap();
    // moto accepts any key; this only checks that an explicit endpoint over http works.
    assert_eq!(&wrong.get(&object).await.unwrap()[..], b"a,b\n3,4\n");
    for d in [from, back] {
        std::fs::remove_dir_all(d).unwrap();
    }
}

#[test]
fn blocking_s3_from_a_plain_thread() {
    let moto = MotoServer::start();
    moto.create_bucket("blocking");
    let store = BlockingStore::new(moto.store()).unwrap();
    let object = Location::parse("s3://blocking/k").unwrap();
    store.put(&object, b"v".to_vec()).unwrap();
    assert_eq!(&store.get(&object).unwrap()[..], b"v");
}
