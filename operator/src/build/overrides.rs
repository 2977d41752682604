//! `spec` pod overrides (nodeSelector, tolerations, affinity, priorityClassName, pod annotations
//! and labels, env, envFrom) laid over the pod template the operator renders. Additions only:
//! required node-affinity terms are ANDed with the operator's zone pinning (never ORed beside
//! it, which would let pods leave their zone), preferred and pod (anti-)affinity terms are
//! appended to the operator's hostname anti-affinity, the operator's labels win over
//! `podLabels`, and `envFrom` sources come before the operator's ConfigMap so its `WG_*` keys
//! win (validation already refused `env` names it sets).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Affinity, NodeAffinity, NodeSelector, NodeSelectorTerm, PodAffinity, PodAntiAffinity,
    PodTemplateSpec,
};
use wardengate_crds::PodOverrides;

/// Lays `o` over a rendered pod template.
pub fn apply(template: &mut PodTemplateSpec, o: &PodOverrides) {
    let meta = template.metadata.get_or_insert_with(Default::default);
    if !o.pod_labels.is_empty() {
        let own = meta.labels.take().unwrap_or_default();
        let mut labels = o.pod_labels.clone();
        labels.extend(own); // the operator's labels win
        meta.labels = Some(labels);
    }
    if !o.pod_annotations.is_empty() {
        let own = meta.annotations.take().unwrap_or_default();
        let mut annotations = o.pod_annotations.clone();
        annotations.extend(own);
        meta.annotations = Some(annotations);
    }
    let Some(pod) = template.spec.as_mut() else {
        return;
    };
    if !o.node_selector.is_empty() {
        let mut sel = pod.node_selector.take().unwrap_or_default();
        for (k, v) in &o.node_selector {
            sel.entry(k.clone()).or_insert_with(|| v.clone());
        }
        pod.node_selector = Some(sel);
    }
    if !o.tolerations.is_empty() {
        pod.tolerations
            .get_or_insert_with(Vec::new)
            .extend(o.tolerations.iter().cloned());
    }
    if let Some(p) = &o.priority_class_name {
        pod.priority_class_name = Some(p.clone());
    }
    if let Some(extra) = &o.affinity {
        pod.affinity = Some(merge_affinity(
            pod.affinity.take().unwrap_or_default(),
            extra,
        ));
    }
    for c in &mut pod.containers {
        if !o.env.is_empty() {
            // After the operator's: `$(VAR)` in a user value may refer to them.
            c.env
                .get_or_insert_with(Vec::new)
                .extend(o.env.iter().cloned());
        }
        if !o.env_from.is_empty() {
            let own = c.env_from.take().unwrap_or_default();
            c.env_from = Some(o.env_from.iter().cloned().chain(own).collect());
        }
    }
}

/// The operator's affinity with `extra` added (see the module docs).
pub fn merge_affinity(mut own: Affinity, extra: &Affinity) -> Affinity {
    if let Some(x) = &extra.node_affinity {
        let na = own.node_affinity.get_or_insert_with(NodeAffinity::default);
        if let Some(req) = &x.required_during_scheduling_ignored_during_execution {
            na.required_during_scheduling_ignored_during_execution = Some(
                match na
                    .required_during_scheduling_ignored_during_execution
                    .take()
                {
                    Some(mine) => and_terms(&mine, req),
                    None => req.clone(),
                },
            );
        }
        if let Some(pref) = &x.preferred_during_scheduling_ignored_during_execution {
            na.preferred_during_scheduling_ignored_during_execution
                .get_or_insert_with(Vec::new)
                .extend(pref.iter().cloned());
        }
    }
    if let Some(x) = &extra.pod_affinity {
        let pa = own.pod_affinity.get_or_insert_with(PodAffinity::default);
        append(
            &mut pa.required_during_scheduling_ignored_during_execution,
            &x.required_during_scheduling_ignored_during_execution,
        );
        append(
            &mut pa.preferred_during_scheduling_ignored_during_execution,
            &x.preferred_during_scheduling_ignored_during_execution,
        );
    }
    if let Some(x) = &extra.pod_anti_affinity {
        let pa = own
            .pod_anti_affinity
            .get_or_insert_with(PodAntiAffinity::default);
        append(
            &mut pa.required_during_scheduling_ignored_during_execution,
            &x.required_during_scheduling_ignored_during_execution,
        );
        append(
            &mut pa.preferred_during_scheduling_ignored_during_execution,
            &x.preferred_during_scheduling_ignored_during_execution,
        );
    }
    own
}

fn append<T: Clone>(into: &mut Option<Vec<T>>, from: &Option<Vec<T>>) {
    if let Some(f) = from {
        into.get_or_insert_with(Vec::new).extend(f.iter().cloned());
    }
}

/// Terms are ORed, expressions inside a term ANDed: `(a1 ∨ a2) ∧ (b1 ∨ b2)` is every
/// `ai ∧ bj`, each a term with both sets of requirements.
fn and_terms(a: &NodeSelector, b: &NodeSelector) -> NodeSelector {
    let mut terms = Vec::new();
    for x in &a.node_selector_terms {
        for y in &b.node_selector_terms {
            let cat = |p: &Option<Vec<_>>, q: &Option<Vec<_>>| {
                let v: Vec<_> = p.iter().chain(q.iter()).flatten().cloned().collect();
                (!v.is_empty()).then_some(v)
            };
            terms.push(NodeSelectorTerm {
                match_expressions: cat(&x.match_expressions, &y.match_expressions),
                match_fields: cat(&x.match_fields, &y.match_fields),
            });
        }
    }
    NodeSelector {
        node_selector_terms: terms,
    }
}

/// Keys of `labels` the operator also sets on the pods (theirs win), for a warning.
pub fn shadowed_labels<'a>(
    labels: &'a BTreeMap<String, String>,
    own: &BTreeMap<String, String>,
) -> Vec<&'a str> {
    labels
        .keys()
        .filter(|k| own.contains_key(*k) || k.starts_with("wardengate.io/"))
        .map(String::as_str)
        .collect()
}
