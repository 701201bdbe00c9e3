//! How a metric proposal becomes the replica count the HPA sets (kube's
//! normalizeDesiredReplicas and normalizeDesiredReplicasWithBehaviors).
//!
//! Without `spec.behavior` (the legacy path) the proposal is stabilized against scale
//! downs — the highest recommendation of the downscale stabilization window wins — then
//! kept within min/max and a scale-up of at most max(2 × current, 4). With
//! `spec.behavior`, the recommendation is held between the lowest recommendation of the
//! scale-up window and the highest of the scale-down window, then limited by the
//! policies of the direction (Pods or Percent per periodSeconds, counting the scale
//! events of that period; `selectPolicy` picks the largest or smallest change, or
//! disables the direction) and by min/max.
//!
//! The recommendations and scale events of each HPA live in [`HpaState`], in memory; the
//! controller drops an HPA's state when the HPA is deleted. Everything here is judged at
//! a `now` the caller passes, so tests move time by hand.

use std::time::Duration;

use k8s_openapi::api::autoscaling::v2::{
    HPAScalingPolicy, HPAScalingRules, HorizontalPodAutoscalerBehavior,
};
use k8s_openapi::jiff::Timestamp;

#[derive(Debug, Clone, Copy, PartialEq)]
struct Recommendation {
    replicas: i32,
    at: Timestamp,
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct ScaleEvent {
    /// How many replicas were added or removed (never negative).
    change: i32,
    at: Timestamp,
    outdated: bool,
}

/// What the controller remembers of one HPA between reconciles.
#[derive(Debug, Default)]
pub(crate) struct HpaState {
    recommendations: Vec<Recommendation>,
    up_events: Vec<ScaleEvent>,
    down_events: Vec<ScaleEvent>,
}

/// A condition the normalization sets: (status True?, reason, message).
pub(crate) type Verdict = (bool, &'static str, &'static str);

/// The normalized replica count and the AbleToScale and ScalingLimited conditions it
/// sets.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Normalized {
    pub replicas: i32,
    pub able_to_scale: Verdict,
    pub scaling_limited: Verdict,
}

const READY_FOR_NEW_SCALE: Verdict = (
    true,
    "ReadyForNewScale",
    "recommended size matches current size",
);
const SCALE_DOWN_STABILIZED: Verdict = (
    true,
    "ScaleDownStabilized",
    "recent recommendations were higher than current one, applying the highest recent recommendation",
);
const SCALE_UP_STABILIZED: Verdict = (
    true,
    "ScaleUpStabilized",
    "recent recommendations were lower than current one, applying the lowest recent recommendation",
);
const WITHIN_RANGE: (&str, &str) = (
    "DesiredWithinRange",
    "the desired count is within the acceptable range",
);
const SCALE_UP_LIMIT: (&str, &str) = (
    "ScaleUpLimit",
    "the desired replica count is increasing faster than the maximum scale rate",
);
const SCALE_DOWN_LIMIT: (&str, &str) = (
    "ScaleDownLimit",
    "the desired replica count is decreasing faster than the maximum scale rate",
);
const TOO_MANY: (&str, &str) = (
    "TooManyReplicas",
    "the desired replica count is more than the maximum replica count",
);
const TOO_FEW: (&str, &str) = (
    "TooFewReplicas",
    "the desired replica count is less than the minimum replica count",
);

fn ago(now: Timestamp, d: Duration) -> Timestamp {
    now.checked_sub(d).unwrap_or(Timestamp::MIN)
}

fn secs(s: i32) -> Duration {
    Duration::from_secs(u64::try_from(s).unwrap_or(0))
}

/// `behavior` with kube's defaults filled in (the API server's, in case an object came
/// without them): scale up with no window, Max of 4 pods or 100 % per 15 s; scale down
/// with the downscale stabilization flag as window, 100 % per 15 s.
pub(crate) fn with_defaults(
    b: &HorizontalPodAutoscalerBehavior,
    downscale_window: Duration,
) -> (HPAScalingRules, HPAScalingRules) {
    let policy = |type_: &str, value| HPAScalingPolicy {
        type_: type_.into(),
        value,
        period_seconds: 15,
    };
    let fill = |r: Option<&HPAScalingRules>, window: i32, policies: Vec<HPAScalingPolicy>| {
        let mut r = r.cloned().unwrap_or_default();
        r.select_policy.get_or_insert_with(|| "Max".into());
        if r.policies.as_ref().is_none_or(Vec::is_empty) {
            r.policies = Some(policies);
        }
        r.stabilization_window_seconds.get_or_insert(window);
        r
    };
    let down_window = i32::try_from(downscale_window.as_secs()).unwrap_or(i32::MAX);
    (
        fill(
            b.scale_up.as_ref(),
            0,
            vec![policy("Pods", 4), policy("Percent", 100)],
        ),
        fill(
            b.scale_down.as_ref(),
            down_window,
            vec![policy("Percent", 100)],
        ),
    )
}

impl HpaState {
    /// The first recommendation of an HPA is its target's replica count.
    pub fn record_initial(&mut self, current: i32, now: Timestamp) {
        if self.recommendations.is_empty() {
            self.recommendations.push(Recommendation {
                replicas: current,
                at: now,
            });
        }
    }

    /// Records `desired`, reusing the slot of an expired recommendation.
    fn record(&mut self, old: Option<usize>, desired: i32, now: Timestamp) {
        let r = Recommendation {
            replicas: desired,
            at: now,
        };
        match old {
            Some(i) => self.recommendations[i] = r,
            None => self.recommendations.push(r),
        }
    }

    /// The legacy path (no `spec.behavior`).
    pub fn normalize_legacy(
        &mut self,
        now: Timestamp,
        downscale_window: Duration,
        current: i32,
        desired: i32,
        min: i32,
        max: i32,
    ) -> Normalized {
        let cutoff = ago(now, downscale_window);
        let mut stabilized = desired;
        let mut old = None;
        for (i, r) in self.recommendations.iter().enumerate() {
            if r.at < cutoff {
                old = Some(i);
            } else if r.replicas > stabilized {
                stabilized = r.replicas;
            }
        }
        self.record(old, desired, now);
        let able_to_scale = if stabilized != desired {
            SCALE_DOWN_STABILIZED
        } else {
            READY_FOR_NEW_SCALE
        };
        let scale_up_limit = (2 * i64::from(current)).max(4).min(i64::from(i32::MAX)) as i32;
        let (upper, upper_why) = if max > scale_up_limit {
            (scale_up_limit, SCALE_UP_LIMIT)
        } else {
            (max, TOO_MANY)
        };
        let (replicas, why) = if stabilized < min {
            (min, TOO_FEW)
        } else if stabilized > upper {
            (upper, upper_why)
        } else {
            (stabilized, WITHIN_RANGE)
        };
        Normalized {
            replicas,
            able_to_scale,
            scaling_limited: (replicas != stabilized, why.0, why.1),
        }
    }

    /// The `spec.behavior` path; `up` and `down` as [`with_defaults`] gives them.
    #[allow(clippy::too_many_arguments)]
    pub fn normalize_with_behavior(
        &mut self,
        now: Timestamp,
        up: &HPAScalingRules,
        down: &HPAScalingRules,
        current: i32,
        desired: i32,
        min: i32,
        max: i32,
    ) -> Normalized {
        let up_cutoff = ago(now, secs(up.stabilization_window_seconds.unwrap_or(0)));
        let down_cutoff = ago(now, secs(down.stabilization_window_seconds.unwrap_or(0)));
        let (mut up_rec, mut down_rec) = (desired, desired);
        let mut old = None;
        for (i, r) in self.recommendations.iter().enumerate() {
            if r.at > up_cutoff {
                up_rec = up_rec.min(r.replicas);
            }
            if r.at > down_cutoff {
                down_rec = down_rec.max(r.replicas);
            }
            if r.at < up_cutoff && r.at < down_cutoff {
                old = Some(i);
            }
        }
        let stabilized = current.max(up_rec).min(down_rec);
        self.record(old, desired, now);
        let able_to_scale = if stabilized == desired {
            READY_FOR_NEW_SCALE
        } else if desired >= current {
            SCALE_UP_STABILIZED
        } else {
            SCALE_DOWN_STABILIZED
        };

        let (replicas, why) = if stabilized > current {
            let limit =
                scale_up_limit(now, current, &self.up_events, &self.down_events, up).max(current);
            let (allowed, why) = if max > limit {
                (limit, SCALE_UP_LIMIT)
            } else {
                (max, TOO_MANY)
            };
            if stabilized > allowed {
                (allowed, why)
            } else {
                (stabilized, WITHIN_RANGE)
            }
        } else if stabilized < current {
            let limit = scale_down_limit(now, current, &self.up_events, &self.down_events, down)
                .min(current);
            let (allowed, why) = if min < limit {
                (limit, SCALE_DOWN_LIMIT)
            } else {
                (min, TOO_FEW)
            };
            if stabilized < allowed {
                (allowed, why)
            } else {
                (stabilized, WITHIN_RANGE)
            }
        } else {
            (stabilized, WITHIN_RANGE)
        };
        Normalized {
            replicas,
            able_to_scale,
            scaling_limited: (replicas != stabilized, why.0, why.1),
        }
    }

    /// Remembers a rescale for the policies' periods (only with `spec.behavior`).
    pub fn store_scale_event(
        &mut self,
        behavior: Option<(&HPAScalingRules, &HPAScalingRules)>,
        prev: i32,
        new: i32,
        now: Timestamp,
    ) {
        let Some((up, down)) = behavior else { return };
        let (events, rules, change) = if new > prev {
            (&mut self.up_events, up, new - prev)
        } else {
            (&mut self.down_events, down, prev - new)
        };
        let cutoff = ago(now, secs(longest_period(rules)));
        let mut old = None;
        for (i, e) in events.iter_mut().enumerate() {
            if e.at < cutoff {
                e.outdated = true;
            }
            if e.outdated {
                old = Some(i);
            }
        }
        let e = ScaleEvent {
            change,
            at: now,
            outdated: false,
        };
        match old {
            Some(i) => events[i] = e,
            None => events.push(e),
        }
    }
}

fn longest_period(rules: &HPAScalingRules) -> i32 {
    rules
        .policies
        .iter()
        .flatten()
        .map(|p| p.period_seconds)
        .max()
        .unwrap_or(0)
}

/// Replicas added (or removed) by the events of the last `period_seconds`.
fn change_in_period(now: Timestamp, period_seconds: i32, events: &[ScaleEvent]) -> i32 {
    let cutoff = ago(now, secs(period_seconds));
    events
        .iter()
        .filter(|e| e.at > cutoff)
        .map(|e| e.change)
        .fold(0i32, i32::saturating_add)
}

fn scale_up_limit(
    now: Timestamp,
    current: i32,
    up_events: &[ScaleEvent],
    down_events: &[ScaleEvent],
    rules: &HPAScalingRules,
) -> i32 {
    scale_limit(now, current, up_events, down_events, rules, true)
}

fn scale_down_limit(
    now: Timestamp,
    current: i32,
    up_events: &[ScaleEvent],
    down_events: &[ScaleEvent],
    rules: &HPAScalingRules,
) -> i32 {
    scale_limit(now, current, up_events, down_events, rules, false)
}

/// How far the policies of `rules` let the count go from `current` upwards (`up`) or
/// downwards, counting the changes already made within each policy's period (kube's
/// calculateScaleUpLimitWithScalingRules / calculateScaleDownLimitWithBehaviors).
/// `selectPolicy: Max` takes the policy allowing the biggest change, `Min` the smallest.
fn scale_limit(
    now: Timestamp,
    current: i32,
    up_events: &[ScaleEvent],
    down_events: &[ScaleEvent],
    rules: &HPAScalingRules,
    up: bool,
) -> i32 {
    let select = rules.select_policy.as_deref().unwrap_or("Max");
    if select == "Disabled" {
        return current;
    }
    // The biggest change is the highest limit upwards and the lowest downwards.
    let higher = (select != "Min") == up;
    let mut result = if higher { i32::MIN } else { i32::MAX };
    for p in rules.policies.iter().flatten() {
        let start = current - change_in_period(now, p.period_seconds, up_events)
            + change_in_period(now, p.period_seconds, down_events);
        let proposed = match (p.type_.as_str(), up) {
            ("Pods", true) => start.saturating_add(p.value),
            ("Pods", false) => start.saturating_sub(p.value),
            // Rounded up so a small Percent still lets the count grow.
            ("Percent", true) => {
                (f64::from(start) * (1.0 + f64::from(p.value) / 100.0)).ceil() as i32
            }
            ("Percent", false) => (f64::from(start) * (1.0 - f64::from(p.value) / 100.0)) as i32,
            _ => continue,
        };
        result = if higher {
            result.max(proposed)
        } else {
            result.min(proposed)
        };
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + s).unwrap()
    }

    fn rules(select: &str, window: i32, policies: &[(&str, i32, i32)]) -> HPAScalingRules {
        HPAScalingRules {
            select_policy: Some(select.into()),
            stabilization_window_seconds: Some(window),
            policies: Some(
                policies
                    .iter()
                    .map(|(ty, v, p)| HPAScalingPolicy {
                        type_: (*ty).into(),
                        value: *v,
                        period_seconds: *p,
                    })
                    .collect(),
            ),
            tolerance: None,
        }
    }

    const FIVE_MIN: Duration = Duration::from_secs(300);

    #[test]
    fn legacy_scale_down_waits_for_the_window() {
        let mut s = HpaState::default();
        s.record_initial(5, t(0));
        // Asked to go to 2 at once: the recommendation of 5 is still in the window.
        let n = s.normalize_legacy(t(10), FIVE_MIN, 5, 2, 1, 10);
        assert_eq!(n.replicas, 5);
        assert_eq!(n.able_to_scale.1, "ScaleDownStabilized");
        assert_eq!(
            n.scaling_limited,
            (false, "DesiredWithinRange", WITHIN_RANGE.1)
        );
        // Once the 5 has left the window the highest remaining (2, then 3) wins.
        let n = s.normalize_legacy(t(200), FIVE_MIN, 5, 3, 1, 10);
        assert_eq!(n.replicas, 5);
        let n = s.normalize_legacy(t(301), FIVE_MIN, 5, 2, 1, 10);
        assert_eq!(n.replicas, 3);
        let n = s.normalize_legacy(t(600), FIVE_MIN, 3, 2, 1, 10);
        assert_eq!(n.replicas, 2);
        assert_eq!(n.able_to_scale.1, "ReadyForNewScale");
    }

    #[test]
    fn legacy_limits_scale_up_and_bounds() {
        let mut s = HpaState::default();
        let n = s.normalize_legacy(t(0), FIVE_MIN, 1, 10, 1, 20);
        assert_eq!(n.replicas, 4);
        assert_eq!(
            n.scaling_limited,
            (true, SCALE_UP_LIMIT.0, SCALE_UP_LIMIT.1)
        );
        let n = s.normalize_legacy(t(0), FIVE_MIN, 5, 30, 1, 20);
        assert_eq!(n.replicas, 10);
        let n = s.normalize_legacy(t(0), FIVE_MIN, 10, 30, 1, 12);
        assert_eq!(n.replicas, 12);
        assert_eq!(n.scaling_limited, (true, TOO_MANY.0, TOO_MANY.1));
        let mut s = HpaState::default();
        let n = s.normalize_legacy(t(0), FIVE_MIN, 3, 1, 2, 12);
        assert_eq!(n.replicas, 2);
        assert_eq!(n.scaling_limited, (true, TOO_FEW.0, TOO_FEW.1));
    }

    #[test]
    fn default_behavior_is_kubes() {
        let (up, down) = with_defaults(&HorizontalPodAutoscalerBehavior::default(), FIVE_MIN);
        assert_eq!(
            up,
            rules("Max", 0, &[("Pods", 4, 15), ("Percent", 100, 15)])
        );
        assert_eq!(down, rules("Max", 300, &[("Percent", 100, 15)]));
        // A given window or policy is kept.
        let b = HorizontalPodAutoscalerBehavior {
            scale_down: Some(HPAScalingRules {
                stabilization_window_seconds: Some(0),
                ..Default::default()
            }),
            scale_up: Some(rules("Min", 30, &[("Pods", 1, 60)])),
        };
        let (up, down) = with_defaults(&b, FIVE_MIN);
        assert_eq!(up, rules("Min", 30, &[("Pods", 1, 60)]));
        assert_eq!(down.stabilization_window_seconds, Some(0));
    }

    #[test]
    fn pods_policy_limits_each_period() {
        let up = rules("Max", 0, &[("Pods", 2, 60)]);
        let down = rules("Max", 0, &[("Percent", 100, 15)]);
        let mut s = HpaState::default();
        s.record_initial(1, t(0));
        let n = s.normalize_with_behavior(t(0), &up, &down, 1, 10, 1, 10);
        assert_eq!(n.replicas, 3);
        assert_eq!(
            n.scaling_limited,
            (true, SCALE_UP_LIMIT.0, SCALE_UP_LIMIT.1)
        );
        s.store_scale_event(Some((&up, &down)), 1, 3, t(0));
        // Within the same minute the 2 pods are spent.
        let n = s.normalize_with_behavior(t(30), &up, &down, 3, 10, 1, 10);
        assert_eq!(n.replicas, 3);
        // A minute later two more.
        let n = s.normalize_with_behavior(t(61), &up, &down, 3, 10, 1, 10);
        assert_eq!(n.replicas, 5);
    }

    #[test]
    fn percent_policy_and_select_policy() {
        let down = rules("Max", 0, &[("Percent", 100, 15)]);
        // 50 % of 10 → at most 15; Pods 2 → 12. Max picks 15, Min 12.
        let max = rules("Max", 0, &[("Percent", 50, 60), ("Pods", 2, 60)]);
        let min = rules("Min", 0, &[("Percent", 50, 60), ("Pods", 2, 60)]);
        let n = HpaState::default().normalize_with_behavior(t(0), &max, &down, 10, 40, 1, 100);
        assert_eq!(n.replicas, 15);
        let n = HpaState::default().normalize_with_behavior(t(0), &min, &down, 10, 40, 1, 100);
        assert_eq!(n.replicas, 12);
        // A percentage rounds up: 10 % of 3 still adds one.
        let small = rules("Max", 0, &[("Percent", 10, 60)]);
        let n = HpaState::default().normalize_with_behavior(t(0), &small, &down, 3, 40, 1, 100);
        assert_eq!(n.replicas, 4);
        // Disabled never scales that way.
        let off = rules("Disabled", 0, &[("Pods", 4, 15)]);
        let n = HpaState::default().normalize_with_behavior(t(0), &off, &down, 3, 40, 1, 100);
        assert_eq!(n.replicas, 3);
        let n = HpaState::default().normalize_with_behavior(t(0), &max, &off, 10, 2, 1, 100);
        assert_eq!(n.replicas, 10);
        assert_eq!(n.scaling_limited.1, "ScaleDownLimit");
        // Scale down by percent truncates: 30 % of 10 → down to 7.
        let pct = rules("Max", 0, &[("Percent", 30, 60)]);
        let n = HpaState::default().normalize_with_behavior(t(0), &max, &pct, 10, 2, 1, 100);
        assert_eq!(n.replicas, 7);
        assert_eq!(
            n.scaling_limited,
            (true, SCALE_DOWN_LIMIT.0, SCALE_DOWN_LIMIT.1)
        );
    }

    #[test]
    fn scale_down_events_count_against_the_period() {
        let up = rules("Max", 0, &[("Pods", 4, 15)]);
        let down = rules("Max", 0, &[("Pods", 1, 60)]);
        let mut s = HpaState::default();
        let n = s.normalize_with_behavior(t(0), &up, &down, 5, 1, 1, 10);
        assert_eq!(n.replicas, 4);
        s.store_scale_event(Some((&up, &down)), 5, 4, t(0));
        let n = s.normalize_with_behavior(t(10), &up, &down, 4, 1, 1, 10);
        assert_eq!(n.replicas, 4);
        // Scaling up meanwhile would start from 5: 5 + 4 = 9.
        let n = s.normalize_with_behavior(t(10), &up, &down, 4, 20, 1, 10);
        assert_eq!(n.replicas, 9);
    }

    #[test]
    fn stabilization_windows_hold_both_ways() {
        let up = rules("Max", 60, &[("Pods", 100, 15)]);
        let down = rules("Max", 120, &[("Percent", 100, 15)]);
        let mut s = HpaState::default();
        s.record_initial(3, t(0));
        // Up is held at the lowest recommendation of the last minute (3).
        let n = s.normalize_with_behavior(t(10), &up, &down, 3, 8, 1, 10);
        assert_eq!(n.replicas, 3);
        assert_eq!(n.able_to_scale.1, "ScaleUpStabilized");
        let n = s.normalize_with_behavior(t(61), &up, &down, 3, 8, 1, 10);
        assert_eq!(n.replicas, 8);
        assert_eq!(n.able_to_scale.1, "ReadyForNewScale");
        // Down is held at the highest of the last two minutes (8).
        let n = s.normalize_with_behavior(t(100), &up, &down, 8, 2, 1, 10);
        assert_eq!(n.replicas, 8);
        assert_eq!(n.able_to_scale.1, "ScaleDownStabilized");
        let n = s.normalize_with_behavior(t(230), &up, &down, 8, 2, 1, 10);
        assert_eq!(n.replicas, 2);
    }

    #[test]
    fn outdated_events_are_reused() {
        let up = rules("Max", 0, &[("Pods", 1, 10)]);
        let down = rules("Max", 0, &[("Pods", 1, 10)]);
        let mut s = HpaState::default();
        for i in 0..5 {
            s.store_scale_event(Some((&up, &down)), 1, 2, t(i * 20));
        }
        assert_eq!(s.up_events.len(), 1);
        s.store_scale_event(None, 1, 2, t(200));
        assert_eq!(s.up_events.len(), 1);
    }
}
