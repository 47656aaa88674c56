//! Exhaustive grid search.
//!
//! The grid is enumerated in a fixed order: families in the order of the [`Space`], and within a
//! family the cartesian product of each domain's [`Domain::grid_points`], domains in name order
//! with the last name varying fastest. Each suggestion is the first point of that order that no
//! observation in the history holds yet, in any state: a point that failed is not retried. Skipping by content rather than taking the `index`-th
//! point keeps the grid complete when trial indices are spent on warm-start configurations, and
//! keeps parallel suggestions apart because running trials are in the history as `Pending`.

use std::collections::BTreeSet;

use super::space::{Domain, Family, ParamValue, Params};
use super::{FamilySpace, Sampler, Space, SuggestContext, Suggestion, same_value};

/// Enumerates the grid; see the module documentation for the order.
#[derive(Clone, Copy, Debug, Default)]
pub struct GridSampler;

impl Sampler for GridSampler {
    fn suggest(&self, ctx: &SuggestContext<'_>) -> Option<Suggestion> {
        let size = grid_size(ctx.space)?;
        let taken: BTreeSet<u64> = ctx
            .history
            .iter()
            .filter_map(|observation| {
                grid_position(ctx.space, observation.family, &observation.params)
            })
            .collect();
        // Each taken position is one history entry, so this scans at most history + 1 points.
        let free = (0..size).find(|position| !taken.contains(position))?;
        grid_point(ctx.space, free)
    }
}

/// The number of points in the grid, or `None` when some searched domain is continuous (a float
/// without `steps`) or the count does not fit in a `u64`. A study's `maxTrials` beyond this
/// size can never be reached.
pub fn grid_size(space: &Space) -> Option<u64> {
    space.families.iter().try_fold(0u64, |total, family| {
        total.checked_add(family_size(family)?)
    })
}

/// The point at `position` in the enumeration order, or `None` past the end.
pub fn grid_point(space: &Space, mut position: u64) -> Option<Suggestion> {
    for family in &space.families {
        let size = family_size(family)?;
        if position >= size {
            position -= size;
            continue;
        }
        let mut params = family.fixed.clone();
        // Mixed-radix decoding, least significant digit last: the last name varies fastest.
        for (name, domain) in family.domains.iter().rev() {
            let len = axis_len(domain)?;
            params.insert(name.clone(), axis_value(domain, position % len)?);
            position /= len;
        }
        return Some(Suggestion {
            family: family.family,
            params,
        });
    }
    None
}

/// Where a configuration sits in the enumeration order, if it is a grid point at all.
pub fn grid_position(space: &Space, family: Family, params: &Params) -> Option<u64> {
    let mut offset = 0u64;
    for candidate in &space.families {
        let size = family_size(candidate)?;
        if candidate.family != family {
            offset = offset.checked_add(size)?;
            continue;
        }
        let mut position = 0u64;
        for (name, domain) in &candidate.domains {
            let len = axis_len(domain)?;
            let index = axis_index(domain, params.get(name)?)?;
            position = position.checked_mul(len)?.checked_add(index)?;
        }
        return offset.checked_add(position);
    }
    None
}

fn family_size(family: &FamilySpace) -> Option<u64> {
    // A family with an unusable domain (which validation rejects) has no points, like a family
    // with an empty choice list.
    if !family.is_samplable() {
        return Some(0);
    }
    family
        .domains
        .values()
        .try_fold(1u64, |size, domain| size.checked_mul(axis_len(domain)?))
}

/// The number of grid points of one domain, counted without materialising them: an integer
/// range or a float with a large `steps` would otherwise allocate the whole axis.
fn axis_len(domain: &Domain) -> Option<u64> {
    match domain {
        Domain::Float { steps: None, .. } => None,
        Domain::Float {
            steps: Some(steps), ..
        } => Some(u64::from((*steps).max(1))),
        Domain::Int { low, high, .. } => {
            let len = i128::from(*high) - i128::from(*low) + 1;
            u64::try_from(len.max(0)).ok()
        }
        Domain::Categorical { values } => u64::try_from(values.len()).ok(),
    }
}

/// The `i`-th grid point of one domain: [`Domain::grid_points`]'s arithmetic, except that the end
/// points are exactly `low` and `high` and interior points are clamped between them, since
/// `exp(ln(high))` can exceed `high` by an ulp and fall outside the domain.
fn axis_value(domain: &Domain, i: u64) -> Option<ParamValue> {
    match domain {
        Domain::Float {
            low,
            high,
            log,
            steps: Some(steps),
        } => {
            let steps = (*steps).max(1);
            let i = u32::try_from(i).ok().filter(|i| *i < steps)?;
            if i == 0 {
                return Some(ParamValue::Float(*low));
            }
            let (a, b) = if *log {
                (low.ln(), high.ln())
            } else {
                (*low, *high)
            };
            if i == steps - 1 {
                return Some(ParamValue::Float(*high));
            }
            let x = a + (b - a) * f64::from(i) / f64::from(steps - 1);
            let v = if *log { x.exp() } else { x };
            Some(ParamValue::Float(if low <= high {
                v.clamp(*low, *high)
            } else {
                v
            }))
        }
        Domain::Float { steps: None, .. } => None,
        Domain::Int { low, high, .. } => {
            let value = i128::from(*low) + i128::from(i);
            i64::try_from(value)
                .ok()
                .filter(|value| value <= high)
                .map(ParamValue::Int)
        }
        Domain::Categorical { values } => values.get(usize::try_from(i).ok()?).cloned(),
    }
}

/// The grid index of `value` on one axis, if it is one of the axis's points.
fn axis_index(domain: &Domain, value: &ParamValue) -> Option<u64> {
    match domain {
        Domain::Float {
            low,
            high,
            log,
            steps: Some(steps),
        } => {
            let v = value.as_f64()?;
            let steps = (*steps).max(1);
            let guess = if steps == 1 {
                0
            } else {
                let (a, b, x) = if *log {
                    (low.ln(), high.ln(), v.ln())
                } else {
                    (*low, *high, v)
                };
                let fraction = (x - a) / (b - a) * f64::from(steps - 1);
                if !fraction.is_finite() {
                    return None;
                }
                fraction.round().clamp(0.0, f64::from(steps - 1)) as u64
            };
            // The nearest point must actually be the value: off-grid values take no slot.
            let point = axis_value(domain, guess)?;
            same_value(&point, value).then_some(guess)
        }
        Domain::Float { steps: None, .. } => None,
        Domain::Int { low, .. } => {
            let v = value.as_i64()?;
            if !domain.contains(value) {
                return None;
            }
            u64::try_from(i128::from(v) - i128::from(*low)).ok()
        }
        Domain::Categorical { values } => values
            .iter()
            .position(|candidate| same_value(candidate, value))
            .and_then(|i| u64::try_from(i).ok()),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::api::Direction;
    use crate::search::{Observation, ObservationState};

    fn space() -> Space {
        let mut mlp = BTreeMap::new();
        mlp.insert(
            "activation".to_string(),
            Domain::Categorical {
                values: vec![
                    ParamValue::Str("relu".into()),
                    ParamValue::Str("tanh".into()),
                ],
            },
        );
        mlp.insert(
            "learning_rate".to_string(),
            Domain::Float {
                low: 1e-4,
                high: 1e-2,
                log: true,
                steps: Some(3),
            },
        );
        let mut tree = BTreeMap::new();
        tree.insert(
            "max_depth".to_string(),
            Domain::Int {
                low: 2,
                high: 4,
                log: false,
            },
        );
        let mut fixed = Params::new();
        fixed.insert("min_samples_leaf".into(), ParamValue::Int(5));
        Space {
            families: vec![
                FamilySpace {
                    family: Family::Mlp,
                    domains: mlp,
                    fixed: Params::new(),
                },
                FamilySpace {
                    family: Family::DecisionTree,
                    domains: tree,
                    fixed,
                },
            ],
        }
    }

    fn suggest(space: &Space, history: &[Observation]) -> Option<Suggestion> {
        GridSampler.suggest(&SuggestContext {
            space,
            history,
            direction: Direction::Maximize,
            seed: 0,
            index: u32::try_from(history.len()).unwrap(),
        })
    }

    #[test]
    fn enumerates_families_in_order_then_names_with_the_last_fastest() {
        let space = space();
        assert_eq!(grid_size(&space), Some(2 * 3 + 3));
        let mut history = Vec::new();
        while let Some(point) = suggest(&space, &history) {
            history.push(Observation {
                family: point.family,
                params: point.params,
                state: ObservationState::Pending,
                value: None,
            });
        }
        assert_eq!(history.len(), 9);
        let rendered: Vec<String> = history
            .iter()
            .map(|o| {
                let params: Vec<String> = o
                    .params
                    .values()
                    .map(|v| match v {
                        ParamValue::Float(x) => format!("{x:.1e}"),
                        v => v.to_string(),
                    })
                    .collect();
                format!("{} {}", o.family, params.join(" "))
            })
            .collect();
        assert_eq!(rendered[0], "mlp relu 1.0e-4");
        assert_eq!(rendered[1], "mlp relu 1.0e-3");
        assert_eq!(rendered[3], "mlp tanh 1.0e-4");
        assert_eq!(rendered[6], "decision_tree 2 5");
        assert_eq!(rendered[8], "decision_tree 4 5");
    }

    #[test]
    fn axis_arithmetic_matches_grid_points() {
        let domains = [
            Domain::Float {
                low: 1e-3,
                high: 10.0,
                log: true,
                steps: Some(7),
            },
            Domain::Float {
                low: -1.0,
                high: 1.0,
                log: false,
                steps: Some(1),
            },
            Domain::Int {
                low: -3,
                high: 3,
                log: false,
            },
        ];
        for domain in domains {
            let points = domain.grid_points().unwrap();
            assert_eq!(axis_len(&domain), Some(points.len() as u64));
            for (i, point) in points.iter().enumerate() {
                let value = axis_value(&domain, i as u64).unwrap();
                assert!(same_value(&value, point), "{value} vs {point}");
                assert!(domain.contains(&value), "{value} outside {domain:?}");
                assert_eq!(axis_index(&domain, point), Some(i as u64));
                assert_eq!(axis_index(&domain, &value), Some(i as u64));
            }
            assert_eq!(axis_value(&domain, points.len() as u64), None);
        }
    }

    #[test]
    fn skips_points_taken_by_warm_start_and_accepts_integral_floats() {
        let space = space();
        let mut params = Params::new();
        params.insert("max_depth".into(), ParamValue::Float(2.0));
        params.insert("min_samples_leaf".into(), ParamValue::Int(5));
        let history = vec![Observation {
            family: Family::DecisionTree,
            params,
            state: ObservationState::Complete,
            value: Some(0.5),
        }];
        assert_eq!(
            grid_position(&space, Family::DecisionTree, &history[0].params),
            Some(6)
        );
        let first = suggest(&space, &history).unwrap();
        assert_eq!(first.family, Family::Mlp);
    }

    #[test]
    fn continuous_or_huge_grids_have_no_size() {
        let mut space = space();
        space.families[0].domains.insert(
            "weight_decay".into(),
            Domain::Float {
                low: 0.0,
                high: 1.0,
                log: false,
                steps: None,
            },
        );
        assert_eq!(grid_size(&space), None);
        assert_eq!(suggest(&space, &[]), None);
        let huge = Domain::Int {
            low: i64::MIN,
            high: i64::MAX,
            log: false,
        };
        let mut domains = BTreeMap::new();
        domains.insert("a".to_string(), huge.clone());
        domains.insert("b".to_string(), huge);
        let space = Space {
            families: vec![FamilySpace {
                family: Family::Mlp,
                domains,
                fixed: Params::new(),
            }],
        };
        assert_eq!(grid_size(&space), None);
        assert_eq!(grid_size(&Space { families: vec![] }), Some(0));
        assert_eq!(suggest(&Space { families: vec![] }, &[]), None);
    }
}
