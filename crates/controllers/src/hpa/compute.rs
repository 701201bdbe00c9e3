//! One reconcile's metric computation (kube's computeReplicasForMetrics and the
//! computeStatusFor* functions): the pods the target's selector picks, one proposal per
//! metric spec with the status kube reports for it, and kube's conditions, Events and
//! messages for each way a metric can fail.

use super::*;

/// A milli-value as a canonical decimal quantity (kube's NewMilliQuantity(v, DecimalSI)).
fn milli_quantity(v: i64) -> KubeQuantity {
    if v == 0 {
        return KubeQuantity("0".into());
    }
    if v % 1000 != 0 {
        return KubeQuantity(format!("{v}m"));
    }
    let mut n = v / 1000;
    let mut suffix = 0;
    const SUFFIXES: [&str; 7] = ["", "k", "M", "G", "T", "P", "E"];
    while n % 1000 == 0 && suffix < SUFFIXES.len() - 1 {
        n /= 1000;
        suffix += 1;
    }
    KubeQuantity(format!("{n}{}", SUFFIXES[suffix]))
}

pub(super) fn milli_of(q: &KubeQuantity) -> Result<i64, String> {
    Quantity::parse(&q.0)
        .map(|q| q.milli_value())
        .map_err(|e| format!("invalid quantity {:?}: {e}", q.0))
}

/// A failed metric: the condition it sets and the error it reports upwards.
struct MetricFailure {
    reason: &'static str,
    /// The cause, as the condition and the Event say it.
    cause: String,
    /// The error as computeReplicasForMetric returns it.
    error: String,
}

/// One metric's proposal.
struct Proposal {
    replicas: i32,
    metric: String,
    status: MetricStatus,
}

impl HpaController {
    /// kube's validateAndParseSelector: the target's selector and the pods it picks.
    fn pods_of(&self, s: &mut Sync<'_>, selector: &str) -> Result<Vec<Arc<Pod>>, String> {
        if selector.is_empty() {
            let e = "selector is required";
            self.recorder.warning(s.hpa, "SelectorRequired", e);
            set_condition(
                &mut s.st,
                SCALING_ACTIVE,
                false,
                "InvalidSelector",
                "the HPA target's scale is missing a selector",
                s.now,
            );
            return Err(e.into());
        }
        let parsed = match LabelSelector::parse(selector) {
            Ok(p) => p,
            Err(e) => {
                let e = format!(
                    "couldn't convert selector into a corresponding internal selector object: {e}"
                );
                self.recorder.warning(s.hpa, "InvalidSelector", e.clone());
                set_condition(
                    &mut s.st,
                    SCALING_ACTIVE,
                    false,
                    "InvalidSelector",
                    e.clone(),
                    s.now,
                );
                return Err(e);
            }
        };
        let mut pods = Vec::new();
        self.pods.for_each(Some(&s.ns), |p| {
            if parsed.matches(util::labels_of(&p.metadata)) {
                pods.push(p.clone());
            }
        });
        let mut controlling: Vec<String> = {
            let mut selectors = lock(&self.selectors);
            selectors.insert(s.key.to_string(), parsed);
            let prefix = format!("{}/", s.ns);
            selectors
                .iter()
                .filter(|(k, sel)| {
                    k.starts_with(&prefix)
                        && pods
                            .iter()
                            .any(|p| sel.matches(util::labels_of(&p.metadata)))
                })
                .map(|(k, _)| k.clone())
                .collect()
        };
        if controlling.len() > 1 {
            controlling.sort();
            let e = format!(
                "pods by selector {selector} are controlled by multiple HPAs: [{}]",
                controlling.join(" ")
            );
            self.recorder.warning(s.hpa, "AmbiguousSelector", e.clone());
            set_condition(
                &mut s.st,
                SCALING_ACTIVE,
                false,
                "AmbiguousSelector",
                e.clone(),
                s.now,
            );
            return Err(e);
        }
        Ok(pods)
    }

    /// kube's computeReplicasForMetrics: the largest proposal, or the first failure when
    /// every metric failed or a failure would hide a scale-down.
    #[allow(clippy::type_complexity)]
    pub(super) async fn compute_replicas_for_metrics(
        &self,
        s: &mut Sync<'_>,
        scale: &Scale,
        specs: &[MetricSpec],
    ) -> Result<(i32, String, Option<Vec<MetricStatus>>), (Option<Vec<MetricStatus>>, String)> {
        let selector = scale
            .status
            .as_ref()
            .and_then(|x| x.selector.clone())
            .unwrap_or_default();
        let pods = self.pods_of(s, &selector).map_err(|e| (None, e))?;
        let spec_replicas = scale.spec.as_ref().and_then(|x| x.replicas).unwrap_or(0);
        let status_replicas = scale.status.as_ref().map_or(0, |x| x.replicas);
        let mut statuses = vec![MetricStatus::default(); specs.len()];
        let (mut replicas, mut metric) = (0, String::new());
        let mut invalid = 0;
        let mut first: Option<MetricFailure> = None;
        for (i, spec) in specs.iter().enumerate() {
            let r = self
                .compute_replicas_for_metric(
                    s,
                    spec,
                    spec_replicas,
                    status_replicas,
                    &selector,
                    &pods,
                )
                .await;
            match r {
                Ok(p) => {
                    statuses[i] = p.status;
                    if replicas == 0 || p.replicas > replicas {
                        replicas = p.replicas;
                        metric = p.metric;
                    }
                }
                Err(f) => {
                    self.recorder.warning(s.hpa, f.reason, f.cause.clone());
                    if first.is_none() {
                        first = Some(f);
                    }
                    invalid += 1;
                }
            }
        }
        let statuses = Some(statuses);
        if let Some(f) = &first {
            if invalid >= specs.len() || replicas < spec_replicas {
                set_condition(
                    &mut s.st,
                    SCALING_ACTIVE,
                    false,
                    f.reason,
                    format!(
                        "the HPA was unable to compute the replica count: {}",
                        f.cause
                    ),
                    s.now,
                );
                let e = format!(
                    "invalid metrics ({invalid} invalid out of {}), first error is: {}",
                    specs.len(),
                    f.error
                );
                return Err((statuses, e));
            }
            tracing::debug!(hpa = s.key, error = %f.error, "some metrics are invalid; scaling on the others");
        }
        set_condition(
            &mut s.st,
            SCALING_ACTIVE,
            true,
            "ValidMetricFound",
            format!("the HPA was able to successfully calculate a replica count from {metric}"),
            s.now,
        );
        Ok((replicas, metric, statuses))
    }

    /// kube's computeReplicasForMetric.
    async fn compute_replicas_for_metric(
        &self,
        s: &Sync<'_>,
        spec: &MetricSpec,
        spec_replicas: i32,
        status_replicas: i32,
        selector: &str,
        pods: &[Arc<Pod>],
    ) -> Result<Proposal, MetricFailure> {
        let fail =
            |reason: &'static str, cause: String, wrap: &dyn Fn(&str) -> String| MetricFailure {
                reason,
                error: wrap(&cause),
                cause,
            };
        let tol = self.tolerances(s.hpa);
        match spec.type_.as_str() {
            "Resource" | "ContainerResource" => {
                let (name, container, target, reason) =
                    match (&spec.resource, &spec.container_resource) {
                        (Some(r), _) if spec.type_ == "Resource" => (
                            r.name.clone(),
                            String::new(),
                            r.target.clone(),
                            "FailedGetResourceMetric",
                        ),
                        (_, Some(c)) if spec.type_ == "ContainerResource" => (
                            c.name.clone(),
                            c.container.clone(),
                            c.target.clone(),
                            "FailedGetContainerResourceMetric",
                        ),
                        _ => {
                            let e = format!("invalid metric source: {} is not set", spec.type_);
                            return Err(fail("InvalidMetricSourceType", e.clone(), &|c| {
                                c.to_string()
                            }));
                        }
                    };
                let r = self
                    .resource_metric(
                        s,
                        &name,
                        &container,
                        &target,
                        spec_replicas,
                        selector,
                        pods,
                        tol,
                    )
                    .await;
                let (replicas, current, metric) = r.map_err(|e| {
                    if container.is_empty() {
                        fail(reason, e, &|c| {
                            format!("failed to get {name} resource metric value: {c}")
                        })
                    } else {
                        fail(reason, e, &|c| {
                            format!("failed to get {container} container metric value: {c}")
                        })
                    }
                })?;
                let status = if container.is_empty() {
                    MetricStatus {
                        type_: "Resource".into(),
                        resource: Some(ResourceMetricStatus { name, current }),
                        ..Default::default()
                    }
                } else {
                    MetricStatus {
                        type_: "ContainerResource".into(),
                        container_resource: Some(ContainerResourceMetricStatus {
                            name,
                            container,
                            current,
                        }),
                        ..Default::default()
                    }
                };
                Ok(Proposal {
                    replicas,
                    metric,
                    status,
                })
            }
            "Pods" => {
                let wrap = |c: &str| format!("failed to get pods metric value: {c}");
                let Some(p) = &spec.pods else {
                    return Err(fail(
                        "FailedGetPodsMetric",
                        "invalid pods metric source: pods is not set".into(),
                        &wrap,
                    ));
                };
                let name = &p.metric.name;
                let metric_selector = selector_string(p.metric.selector.as_ref())
                    .map_err(|e| fail("FailedGetPodsMetric", e, &wrap))?;
                let target = p
                    .target
                    .average_value
                    .as_ref()
                    .ok_or_else(|| {
                        "invalid pods metric source: no average value target was set".to_string()
                    })
                    .and_then(milli_of)
                    .map_err(|e| fail("FailedGetPodsMetric", e, &wrap))?;
                let values = self
                    .metrics
                    .pods_metric(&s.ns, selector, name, &metric_selector)
                    .await
                    .map_err(|e| format!("unable to get metric {name}: unable to fetch metrics from custom metrics API: {e}"))
                    .and_then(|v| {
                        if v.is_empty() {
                            Err(format!("unable to get metric {name}: no metrics returned from custom metrics API"))
                        } else {
                            Ok(v)
                        }
                    })
                    .map_err(|e| fail("FailedGetPodsMetric", e, &wrap))?;
                let samples: PodMetricsInfo = values
                    .into_iter()
                    .map(|v| {
                        (
                            v.pod,
                            PodMetric {
                                value: v.milli_value,
                                timestamp: v.timestamp,
                                window: v.window,
                            },
                        )
                    })
                    .collect();
                let (replicas, usage) = replicas::plain_replicas(
                    samples,
                    spec_replicas,
                    target,
                    tol,
                    pods,
                    "",
                    &self.readiness(s.now),
                )
                .map_err(|e| fail("FailedGetPodsMetric", e, &wrap))?;
                Ok(Proposal {
                    replicas,
                    metric: format!("pods metric {name}"),
                    status: MetricStatus {
                        type_: "Pods".into(),
                        pods: Some(PodsMetricStatus {
                            metric: p.metric.clone(),
                            current: MetricValueStatus {
                                average_value: Some(milli_quantity(usage)),
                                ..Default::default()
                            },
                        }),
                        ..Default::default()
                    },
                })
            }
            "Object" => {
                let outer = |c: &str| format!("failed to get object metric value: {c}");
                let Some(o) = &spec.object else {
                    return Err(fail(
                        "FailedGetObjectMetric",
                        "invalid object metric source: object is not set".into(),
                        &outer,
                    ));
                };
                let name = &o.metric.name;
                let metric_selector = selector_string(o.metric.selector.as_ref())
                    .map_err(|e| fail("FailedGetObjectMetric", e, &outer))?;
                let obj = &o.described_object;
                let fetch = || async {
                    self.metrics
                        .object_metric(&s.ns, obj, name, &metric_selector)
                        .await
                        .map_err(|e| {
                            // kube's argument order, verbatim.
                            format!(
                                "unable to get metric {name}: {} on {} {}/unable to fetch metrics from custom metrics API: {e}",
                                obj.kind, s.ns, obj.name
                            )
                        })
                };
                let t = &o.target;
                if t.type_ == "Value" && t.value.is_some() {
                    let target = t
                        .value
                        .as_ref()
                        .map_or(Ok(0), milli_of)
                        .map_err(|e| fail("FailedGetObjectMetric", e, &outer))?;
                    let usage = fetch()
                        .await
                        .map_err(|e| fail("FailedGetObjectMetric", e, &outer))?;
                    let replicas = replicas::usage_ratio_replicas(
                        spec_replicas,
                        usage as f64 / target as f64,
                        tol,
                        pods,
                    )
                    .map_err(|e| fail("FailedGetObjectMetric", e, &outer))?;
                    Ok(Proposal {
                        replicas,
                        metric: format!("{} metric {name}", obj.kind),
                        status: object_status(
                            o.described_object.clone(),
                            &o.metric,
                            MetricValueStatus {
                                value: Some(milli_quantity(usage)),
                                ..Default::default()
                            },
                        ),
                    })
                } else if t.type_ == "AverageValue" && t.average_value.is_some() {
                    let wrap = |c: &str| outer(&format!("failed to get {name} object metric: {c}"));
                    let target = t
                        .average_value
                        .as_ref()
                        .map_or(Ok(0), milli_of)
                        .map_err(|e| fail("FailedGetObjectMetric", e, &wrap))?;
                    let usage = fetch()
                        .await
                        .map_err(|e| fail("FailedGetObjectMetric", e, &wrap))?;
                    let (replicas, avg) =
                        replicas::per_pod_replicas(status_replicas, target, usage, tol);
                    Ok(Proposal {
                        replicas,
                        metric: format!(
                            "external metric {name}({})",
                            selector_debug(o.metric.selector.as_ref())
                        ),
                        status: object_status(
                            o.described_object.clone(),
                            &o.metric,
                            MetricValueStatus {
                                average_value: Some(milli_quantity(avg)),
                                ..Default::default()
                            },
                        ),
                    })
                } else {
                    Err(fail(
                        "FailedGetObjectMetric",
                        "invalid object metric source: neither a value target nor an average value target was set".into(),
                        &outer,
                    ))
                }
            }
            "External" => {
                let Some(x) = &spec.external else {
                    let e = "invalid external metric source: external is not set".to_string();
                    return Err(fail("FailedGetExternalMetric", e, &|c| c.to_string()));
                };
                let name = &x.metric.name;
                let outer = |c: &str| format!("failed to get {name} external metric value: {c}");
                let metric_selector = selector_string(x.metric.selector.as_ref())
                    .map_err(|e| fail("FailedGetExternalMetric", e, &outer))?;
                let shown = selector_debug(x.metric.selector.as_ref());
                let fetch = || async {
                    let v = self
                        .metrics
                        .external_metric(&s.ns, name, &metric_selector)
                        .await
                        .map_err(|e| format!("unable to get external metric {}/{name}/{shown}: unable to fetch metrics from external metrics API: {e}", s.ns))?;
                    if v.is_empty() {
                        return Err(format!("unable to get external metric {}/{name}/{shown}: no metrics returned from external metrics API", s.ns));
                    }
                    Ok(v.iter().fold(0i64, |a, b| a.saturating_add(*b)))
                };
                let status = |current| MetricStatus {
                    type_: "External".into(),
                    external: Some(ExternalMetricStatus {
                        metric: x.metric.clone(),
                        current,
                    }),
                    ..Default::default()
                };
                let metric = format!("external metric {name}({shown})");
                let t = &x.target;
                if let Some(av) = &t.average_value {
                    let wrap =
                        |c: &str| outer(&format!("failed to get {name} external metric: {c}"));
                    let target =
                        milli_of(av).map_err(|e| fail("FailedGetExternalMetric", e, &wrap))?;
                    let usage = fetch()
                        .await
                        .map_err(|e| fail("FailedGetExternalMetric", e, &wrap))?;
                    let (replicas, avg) =
                        replicas::per_pod_replicas(status_replicas, target, usage, tol);
                    Ok(Proposal {
                        replicas,
                        metric,
                        status: status(MetricValueStatus {
                            average_value: Some(milli_quantity(avg)),
                            ..Default::default()
                        }),
                    })
                } else if let Some(v) = &t.value {
                    let wrap =
                        |c: &str| outer(&format!("failed to get external metric {name}: {c}"));
                    let target =
                        milli_of(v).map_err(|e| fail("FailedGetExternalMetric", e, &wrap))?;
                    let usage = fetch()
                        .await
                        .map_err(|e| fail("FailedGetExternalMetric", e, &wrap))?;
                    let replicas = replicas::usage_ratio_replicas(
                        spec_replicas,
                        usage as f64 / target as f64,
                        tol,
                        pods,
                    )
                    .map_err(|e| fail("FailedGetExternalMetric", e, &wrap))?;
                    Ok(Proposal {
                        replicas,
                        metric,
                        status: status(MetricValueStatus {
                            value: Some(milli_quantity(usage)),
                            ..Default::default()
                        }),
                    })
                } else {
                    let e = "invalid external metric source: neither a value target nor an average value target was set";
                    Err(fail("FailedGetExternalMetric", e.into(), &outer))
                }
            }
            other => {
                let e = format!("unknown metric source type {other:?}");
                Err(fail("InvalidMetricSourceType", e, &|c| c.to_string()))
            }
        }
    }

    /// kube's computeStatusForResourceMetricGeneric.
    #[allow(clippy::too_many_arguments)]
    async fn resource_metric(
        &self,
        s: &Sync<'_>,
        resource: &str,
        container: &str,
        target: &MetricTarget,
        current: i32,
        selector: &str,
        pods: &[Arc<Pod>],
        tol: Tolerances,
    ) -> Result<(i32, MetricValueStatus, String), String> {
        let samples = || async {
            let list = self
                .metrics
                .pod_metrics(&s.ns, selector)
                .await
                .map_err(|e| format!("unable to get metrics for resource {resource}: unable to fetch metrics from resource metrics API: {e}"))?;
            replicas::resource_metrics(&list, resource, container)
                .map_err(|e| format!("unable to get metrics for resource {resource}: {e}"))
        };
        if let Some(av) = &target.average_value {
            let wrap = |e: String| format!("failed to get {resource} usage: {e}");
            let target = milli_of(av).map_err(wrap)?;
            let m = samples().await.map_err(wrap)?;
            let (replicas, raw) = replicas::plain_replicas(
                m,
                current,
                target,
                tol,
                pods,
                resource,
                &self.readiness(s.now),
            )
            .map_err(wrap)?;
            return Ok((
                replicas,
                MetricValueStatus {
                    average_value: Some(milli_quantity(raw)),
                    ..Default::default()
                },
                format!("{resource} resource"),
            ));
        }
        let Some(utilization) = target.average_utilization else {
            return Err("invalid resource metric source: neither an average utilization target nor an average value (usage) target was set".into());
        };
        let wrap = |e: String| format!("failed to get {resource} utilization: {e}");
        let m = samples().await.map_err(wrap)?;
        let o = replicas::resource_replicas(
            current,
            utilization,
            resource,
            tol,
            pods,
            m,
            container,
            &self.readiness(s.now),
        )
        .map_err(wrap)?;
        let metric = if container.is_empty() {
            format!("{resource} resource utilization (percentage of request)")
        } else {
            format!("{resource} container resource utilization (percentage of request)")
        };
        Ok((
            o.replicas,
            MetricValueStatus {
                average_utilization: Some(o.utilization),
                average_value: Some(milli_quantity(o.raw)),
                ..Default::default()
            },
            metric,
        ))
    }
}

fn object_status(
    described_object: CrossVersionObjectReference,
    metric: &MetricIdentifier,
    current: MetricValueStatus,
) -> MetricStatus {
    MetricStatus {
        type_: "Object".into(),
        object: Some(ObjectMetricStatus {
            described_object,
            metric: metric.clone(),
            current,
        }),
        ..Default::default()
    }
}

pub(super) fn default_metric() -> MetricSpec {
    MetricSpec {
        type_: "Resource".into(),
        resource: Some(ResourceMetricSource {
            name: "cpu".into(),
            target: MetricTarget {
                type_: "Utilization".into(),
                average_utilization: Some(80),
                ..Default::default()
            },
        }),
        ..Default::default()
    }
}

/// A metric's label selector in its query-string form ("" for none).
fn selector_string(s: Option<&KubeSelector>) -> Result<String, String> {
    match s {
        None => Ok(String::new()),
        Some(s) => util::selector(Some(s))
            .map(|l| l.to_string())
            .map_err(|e| e.to_string()),
    }
}

/// How kube prints a metric selector in messages (`%+v` of a pointer; nil when unset).
fn selector_debug(s: Option<&KubeSelector>) -> String {
    match selector_string(s) {
        Ok(v) if s.is_some() => format!("&LabelSelector{{{v}}}"),
        _ => "nil".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn milli_quantities_print_as_kube_canonicalizes_them() {
        assert_eq!(milli_quantity(0).0, "0");
        assert_eq!(milli_quantity(250).0, "250m");
        assert_eq!(milli_quantity(2000).0, "2");
        assert_eq!(milli_quantity(1500).0, "1500m");
        assert_eq!(milli_quantity(1_048_576_000).0, "1048576");
        assert_eq!(milli_quantity(100_000_000_000).0, "100M");
    }
}
