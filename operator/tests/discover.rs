//! `flywheel discover` on real files: the shared datasets (the real target of each is proposed
//! first), generated orders/customers/products tables with known keys (the joins and their
//! overlap), broken files (listed and skipped), sampling, drafts that pass `flywheel validate`,
//! and the same scan over a real S3 API (moto).
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use flywheel_core::discover::{DiscoverOptions, Discovery, Join, table_name};
use flywheel_core::search::space::Task;
use flywheel_operator::discover::{html, scan, text, write_drafts};
use flywheel_operator::manifest::validate_manifest;
use flywheel_store::moto::{MotoServer, with_s3_env};
use flywheel_store::{BlockingStore, Location};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn copy(from: &Path, to: &Path) {
    std::fs::create_dir_all(to.parent().unwrap()).unwrap();
    std::fs::copy(from, to).unwrap();
}

fn scan_dir(dir: &Path, sample_rows: usize) -> Discovery {
    scan(
        dir.to_str().unwrap(),
        sample_rows,
        &DiscoverOptions::default(),
    )
    .unwrap()
}

/// The first proposal for each table, by table name.
fn first_targets(discovery: &Discovery) -> Vec<(String, String, Task)> {
    let mut seen: Vec<&str> = Vec::new();
    let mut first = Vec::new();
    for target in &discovery.targets {
        if !seen.contains(&target.table.as_str()) {
            seen.push(&target.table);
            first.push((
                table_name(&target.table),
                target.column.clone(),
                target.task,
            ));
        }
    }
    first
}

/// The shared datasets (examples/data holds five of them, adult as a 3,000-row sample; letter
/// and wage are cut to their first rows under tests/data), in folders as a data lake would
/// have them, plus penguins again as Parquet.
#[test]
fn the_real_target_of_each_shared_dataset_is_proposed_first() {
    let dir = tempfile::tempdir().unwrap();
    let data = repo().join("examples/data");
    for name in ["adult-3k", "breast_cancer", "diabetes", "iris", "penguins"] {
        copy(
            &data.join(format!("{name}.csv")),
            &dir.path().join("csv").join(format!("{name}.csv")),
        );
    }
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    copy(
        &fixtures.join("letter-1k.csv"),
        &dir.path().join("more/letter-1k.csv"),
    );
    copy(
        &fixtures.join("wage-600.csv"),
        &dir.path().join("more/deeper/wage-600.csv"),
    );
    copy(
        &repo().join("trainer/tests/data/penguins.parquet"),
        &dir.path().join("lake/penguins.parquet"),
    );
    let discovery = scan_dir(dir.path(), 50_000);
    assert!(discovery.skipped.is_empty(), "{:?}", discovery.skipped);
    assert_eq!(discovery.tables.len(), 8);
    let mut found = first_targets(&discovery);
    found.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    let expect = |t: &str, c: &str, task| (t.to_string(), c.to_string(), task);
    assert_eq!(
        found,
        vec![
            expect("adult-3k", "income", Task::Binary),
            expect("breast_cancer", "diagnosis", Task::Binary),
            expect("diabetes", "progression", Task::Regression),
            expect("iris", "species", Task::Multiclass),
            expect("letter-1k", "lettr", Task::Multiclass),
            expect("penguins", "species", Task::Multiclass),
            expect("penguins", "species", Task::Multiclass),
            expect("wage-600", "wage", Task::Regression),
        ]
    );
    let parquet = discovery
        .tables
        .iter()
        .find(|t| t.format == "parquet")
        .unwrap();
    assert_eq!((parquet.rows, parquet.columns.len()), (344, 8));
    let csv = discovery
        .tables
        .iter()
        .find(|t| t.format == "csv" && t.name == "penguins")
        .unwrap();
    // The same table read from either format gets the same types.
    let types = |t: &flywheel_core::discover::TableProfile| {
        t.columns
            .iter()
            .map(|c| (c.name.clone(), c.column_type, c.distinct))
            .collect::<Vec<_>>()
    };
    assert_eq!(types(parquet), types(csv));
    let penguins_missing = csv.columns.iter().find(|c| c.name == "sex").unwrap();
    assert!(penguins_missing.missing_rate > 0.0);

    // Every draft passes the same validation as `flywheel validate`.
    let out = dir.path().join("drafts");
    let written = write_drafts(&discovery, &out).unwrap();
    assert_eq!(written.len(), discovery.targets.len());
    for path in &written {
        let yaml = std::fs::read_to_string(path).unwrap();
        assert_eq!(
            validate_manifest(&yaml).map_err(|e| format!("{}: {e:?}", path.display())),
            Ok("Study".to_string())
        );
    }
    let names: Vec<String> = written
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert!(names.contains(&"penguins-species.yaml".to_string()));
    assert!(names.contains(&"penguins-species-2.yaml".to_string()));
}

/// customers (40, keys 1..=40), products (30, keys P001..P030), orders (200) whose customer
/// ids run 11..=60 (30 of 50 known) and product ids P001..P040 (30 of 40 known).
fn write_shop(dir: &Path) {
    let mut customers = String::from("customer_id,name,region,signup_year\n");
    for i in 1..=40 {
        customers.push_str(&format!(
            "{i},customer {i},{},{}\n",
            ["north", "south", "east", "west"][i % 4],
            2015 + i % 6
        ));
    }
    let mut products = String::from("product_id,category,price\n");
    for i in 1..=30 {
        products.push_str(&format!(
            "P{i:03},{},{:.2}\n",
            ["toys", "books", "garden"][i % 3],
            2.5 + i as f64 * 1.75
        ));
    }
    let mut orders = String::from("order_id,customer_id,product_id,quantity,returned\n");
    for i in 0..200 {
        orders.push_str(&format!(
            "{},{},P{:03},{},{}\n",
            9000 + i,
            11 + i % 50,
            1 + i % 40,
            1 + i % 4,
            if i % 5 == 0 { "yes" } else { "no" }
        ));
    }
    std::fs::create_dir_all(dir.join("crm")).unwrap();
    std::fs::write(dir.join("crm/customers.csv"), customers).unwrap();
    std::fs::write(dir.join("products.csv"), products).unwrap();
    std::fs::write(dir.join("orders.csv"), orders).unwrap();
}

fn joins(discovery: &Discovery) -> Vec<(String, String, usize, usize)> {
    let mut found: Vec<(String, String, usize, usize)> = discovery
        .joins
        .iter()
        .map(|j: &Join| {
            (
                format!("{}.{}", table_name(&j.from_table), j.from_column),
                format!("{}.{}", table_name(&j.to_table), j.to_column),
                j.matched,
                j.distinct,
            )
        })
        .collect();
    found.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    found
}

fn shop_joins() -> Vec<(String, String, usize, usize)> {
    vec![
        (
            "orders.customer_id".into(),
            "customers.customer_id".into(),
            30,
            50,
        ),
        (
            "orders.product_id".into(),
            "products.product_id".into(),
            30,
            40,
        ),
    ]
}

#[test]
fn join_keys_are_found_with_their_overlap() {
    let dir = tempfile::tempdir().unwrap();
    write_shop(dir.path());
    let discovery = scan_dir(dir.path(), 50_000);
    assert_eq!(joins(&discovery), shop_joins());
    let ratios: Vec<f64> = discovery.joins.iter().map(|j| j.overlap).collect();
    assert_eq!(ratios, vec![0.75, 0.6]);
    let keys = |name: &str| {
        discovery
            .tables
            .iter()
            .find(|t| t.name == name)
            .unwrap()
            .candidate_keys
            .clone()
    };
    assert_eq!(keys("customers"), vec!["customer_id", "name"]);
    assert_eq!(keys("products"), vec!["product_id"]);
    assert_eq!(keys("orders"), vec!["order_id"]);
    let text = text::render(&discovery);
    assert!(
        text.contains("orders.customer_id -> customers.customer_id  overlap 60.0% (30 of 50)"),
        "{text}"
    );
    // The orders' label-like column is proposed, with the task it implies.
    assert!(
        discovery
            .targets
            .iter()
            .any(|t| t.column == "returned" && t.task == Task::Binary),
        "{:?}",
        discovery.targets
    );
    let page = html::page(&discovery);
    assert!(page.contains("<h2>Data discovery</h2>"));
    assert!(page.contains(
        "<td>orders.product_id</td><td>products.product_id</td><td>75.0% (30 of 40)</td>"
    ));
}

#[test]
fn unreadable_files_are_listed_and_skipped() {
    let dir = tempfile::tempdir().unwrap();
    write_shop(dir.path());
    let bad = dir.path().join("bad");
    std::fs::create_dir_all(&bad).unwrap();
    std::fs::write(
        bad.join("garbage.csv"),
        [0xff, 0xfe, 0x00, 0x81, b'\n', 0xc3, 0x28],
    )
    .unwrap();
    std::fs::write(bad.join("ragged.csv"), "a,b\n1,2\n3\n").unwrap();
    std::fs::write(bad.join("header-only.csv"), "a,b\n").unwrap();
    std::fs::write(bad.join("fake.parquet"), "not parquet at all").unwrap();
    std::fs::write(bad.join("notes.txt"), "not a table, not listed").unwrap();
    for name in ["types-gzip", "nested", "binary"] {
        copy(
            &repo().join(format!("trainer/tests/data/{name}.parquet")),
            &bad.join(format!("{name}.parquet")),
        );
    }
    std::os::unix::fs::symlink(dir.path(), bad.join("loop")).unwrap();
    let discovery = scan_dir(dir.path(), 50_000);
    assert_eq!(discovery.tables.len(), 3);
    assert_eq!(joins(&discovery), shop_joins());
    let skipped: Vec<(String, &str)> = discovery
        .skipped
        .iter()
        .map(|s| (table_name(&s.location), s.reason.as_str()))
        .collect();
    let names: Vec<&str> = skipped.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        vec![
            "binary",
            "fake",
            "garbage",
            "header-only",
            "loop",
            "nested",
            "ragged",
            "types-gzip"
        ]
    );
    let reason = |name: &str| skipped.iter().find(|(n, _)| n == name).unwrap().1;
    assert!(
        reason("garbage").to_ascii_lowercase().contains("utf-8"),
        "{}",
        reason("garbage")
    );
    assert!(
        reason("ragged").contains("failed to parse as CSV"),
        "{}",
        reason("ragged")
    );
    assert!(reason("header-only").contains("no rows"));
    assert!(reason("fake").contains("parquet"));
    assert!(
        reason("types-gzip").contains("compressed with gzip"),
        "{}",
        reason("types-gzip")
    );
    assert!(
        reason("nested").contains("\"tags\" is nested"),
        "{}",
        reason("nested")
    );
    assert!(
        reason("binary").contains("not UTF-8"),
        "{}",
        reason("binary")
    );
    assert!(text::render(&discovery).contains("Skipped"));
}

#[test]
fn large_tables_are_sampled_and_say_so() {
    let dir = tempfile::tempdir().unwrap();
    write_shop(dir.path());
    let discovery = scan_dir(dir.path(), 100);
    let orders = discovery
        .tables
        .iter()
        .find(|t| t.name == "orders")
        .unwrap();
    assert_eq!(
        (orders.rows, orders.sample_rows, orders.sampled),
        (200, 100, true)
    );
    let customers = discovery
        .tables
        .iter()
        .find(|t| t.name == "customers")
        .unwrap();
    assert_eq!(
        (customers.rows, customers.sample_rows, customers.sampled),
        (40, 40, false)
    );
    // The first 100 orders hold customers 11..=60 (30 known) and products 1..=40 (30 known).
    assert_eq!(joins(&discovery), shop_joins());
    assert!(
        text::render(&discovery).contains("200 rows, profiled on a sample of the first 100"),
        "{}",
        text::render(&discovery)
    );
}

#[test]
fn a_missing_root_is_an_error_naming_it() {
    let err = scan("/no/such/folder", 10, &DiscoverOptions::default()).unwrap_err();
    assert!(err.to_string().contains("/no/such/folder"), "{err}");
}

/// The same shop under an S3 prefix, through the `flywheel` binary (S3 settings come from the
/// environment, which a test must not change in-process).
#[test]
fn an_s3_prefix_is_scanned_like_a_folder() {
    let moto = MotoServer::start();
    moto.create_bucket("lake");
    let dir = tempfile::tempdir().unwrap();
    write_shop(dir.path());
    let store = BlockingStore::new(moto.store()).unwrap();
    for name in ["crm/customers.csv", "products.csv", "orders.csv"] {
        store
            .upload_file(
                &dir.path().join(name),
                &Location::parse(&format!("s3://lake/shop/{name}")).unwrap(),
            )
            .unwrap();
    }
    store
        .put(
            &Location::parse("s3://lake/shop/broken.csv").unwrap(),
            "a,b\n1\n",
        )
        .unwrap();
    let out = dir.path().join("drafts");
    let output = with_s3_env(
        Command::new(env!("CARGO_BIN_EXE_flywheel")).args([
            "discover",
            "s3://lake/shop",
            "--json",
            "--out",
            out.to_str().unwrap(),
        ]),
        &moto.env(),
    )
    .output()
    .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let discovery: Discovery = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(discovery.tables.len(), 3);
    assert_eq!(joins(&discovery), shop_joins());
    assert_eq!(discovery.skipped.len(), 1);
    assert_eq!(discovery.skipped[0].location, "s3://lake/shop/broken.csv");
    let draft = std::fs::read_to_string(out.join("orders-returned.yaml")).unwrap();
    assert!(draft.contains("uri: s3://lake/shop/orders.csv"), "{draft}");
    assert_eq!(validate_manifest(&draft), Ok("Study".to_string()));
}
