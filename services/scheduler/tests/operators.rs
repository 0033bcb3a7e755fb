//! Cinder's extra-spec operators, and how the CapabilitiesFilter finds the capability each
//! extra spec names.

mod common;

use common::{NOW, default_scheduler, pool, report};
use ember_scheduler::extra_specs::{CapValue, Matcher};
use ember_scheduler::{RequestSpec, ServiceStatus};
use serde_json::{Value, json};

#[test]
fn operators_match_as_cinder_does() {
    #[rustfmt::skip]
    let cases: &[(Value, &str, bool)] = &[
        // No operator: the whole requirement must equal a string capability.
        (json!("lvm"), "lvm", true),
        (json!("lvm"), "LVM", false),
        (json!(5), "5", false),
        (json!(""), "", true),
        (json!(null), "lvm", false),
        // `=` means at least.
        (json!("5"), "= 3", true),
        (json!(5), "= 5", true),
        (json!(3), "= 5", false),
        (json!(true), "= 1", true),
        (json!("abc"), "= 3", false),
        (json!(5), "= x", false),
        (json!(null), "= 1", false),
        // Numeric comparisons.
        (json!(5), "== 5.0", true),
        (json!("5"), "!= 5", false),
        (json!(4), "!= 5", true),
        (json!(10), ">= 10", true),
        (json!(9), ">= 10", false),
        (json!(10), "<= 10", true),
        (json!(11), "<= 10", false),
        (json!(3), "< 4", true),
        (json!(4), "< 4", false),
        (json!(5), "> 4", true),
        (json!(4), "> 4", false),
        (json!(" 7 "), ">= 7", true),
        // String comparisons.
        (json!("abc"), "s== abc", true),
        (json!("abc"), "s!= abc", false),
        (json!("abc"), "s< abd", true),
        (json!("abd"), "s<= abd", true),
        (json!("b"), "s> a", true),
        (json!("a"), "s>= b", false),
        (json!(5), "s== 5", false),
        (json!(5), "s!= 5", true),
        (json!(5), "s< 6", false),
        // Substring.
        (json!("gold silver"), "<in> silver", true),
        (json!("gold"), "<in> silver", false),
        (json!(5), "<in> 5", false),
        // Booleans through bool_from_string.
        (json!(true), "<is> True", true),
        (json!("True"), "<is> true", true),
        (json!("yes"), "<is> True", true),
        (json!(false), "<is> True", false),
        (json!("False"), "<is> False", true),
        (json!("nonsense"), "<is> False", true),
        (json!(1), "<is> True", true),
        (json!("on"), "<is> 1", true),
        // Alternatives; the word between two choices is skipped unread.
        (json!("b"), "<or> a <or> b", true),
        (json!("c"), "<or> a <or> b", false),
        (json!("x"), "<or> a x b", false),
        (json!("b"), "<or> a x b", true),
        // Every word present.
        (json!("aes vmx sse"), "<all-in> aes vmx", true),
        (json!("aes"), "<all-in> aes vmx", false),
        (json!(["aes", "vmx"]), "<all-in> aes vmx", true),
        (json!(["aes"]), "<all-in> aes vmx", false),
        // An operator with nothing after it matches nothing.
        (json!("lvm"), "<is>", false),
        (json!("lvm"), "<in>", false),
        (json!(1), ">=", false),
        (json!("a"), "<or>", false),
    ];
    for (value, req, want) in cases {
        let got = Matcher::parse(req).matches(CapValue::from_json(value));
        assert_eq!(got, *want, "{value} against {req:?}");
    }
}

/// Places a 1 GiB volume with `specs` on one pool reporting `extra` on backend `lvm-1`, whose
/// backend-wide report also holds `replication_enabled: true`.
fn placed(extra: Value, specs: &[(&str, &str)], multiattach: bool) -> bool {
    let mut s = default_scheduler();
    let mut cache = s.new_cache();
    let mut caps = report("lvm-1", vec![pool("p", json!(100), json!(100), extra)]);
    caps.extra.insert("replication_enabled".into(), json!(true));
    cache.update_service("node1@lvm", ServiceStatus::up("nova", NOW));
    cache.update_capabilities("node1@lvm", NOW, caps);
    let spec = RequestSpec {
        size_gb: 1,
        multiattach,
        extra_specs: specs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
        ..RequestSpec::default()
    };
    s.schedule(&mut cache, &spec, NOW).is_ok()
}

/// Extra specs of one case.
type Specs = &'static [(&'static str, &'static str)];

#[test]
fn capabilities_filter_cases() {
    let rich = json!({
        "tiers": ["gold", "silver"],
        "qos": { "max_iops": 5000 },
        "compression": "True",
        "thin_provisioning_support": true,
        "multiattach": false,
    });
    #[rustfmt::skip]
    let cases: &[(&str, Specs, bool)] = &[
        ("no specs", &[], true),
        ("backend name from the backend report", &[("volume_backend_name", "lvm-1")], true),
        ("wrong backend name", &[("volume_backend_name", "lvm-2")], false),
        ("capabilities: prefix is stripped", &[("capabilities:storage_protocol", "nbd")], true),
        ("typed pool field", &[("thin_provisioning_support", "<is> True")], true),
        ("typed pool field mismatch", &[("thick_provisioning_support", "<is> False")], false),
        ("a list passes when one element matches", &[("tiers", "silver")], true),
        ("a list fails when none matches", &[("tiers", "bronze")], false),
        ("nested lookup", &[("capabilities:qos:max_iops", ">= 1000")], true),
        ("nested lookup too low", &[("capabilities:qos:max_iops", ">= 10000")], false),
        ("nested key missing", &[("capabilities:qos:min_iops", ">= 1")], false),
        ("nested lookup into a scalar", &[("capabilities:compression:x", "y")], false),
        ("missing capability", &[("dedup", "<is> True")], false),
        ("vendor scope is ignored", &[("netapp:raid_type", "raid4")], true),
        ("QoS and RESKEY scopes are ignored", &[("QoS:max_iops", "1"), ("RESKEY:x", "y")], true),
        ("provisioning:type is not a capability", &[("provisioning:type", "thin")], true),
        ("backend-wide capability", &[("replication_enabled", "<is> True")], true),
        ("every spec must match", &[("compression", "<is> True"), ("tiers", "bronze")], false),
        ("all specs match", &[("compression", "<is> True"), ("tiers", "gold")], true),
        ("bare capabilities key", &[("capabilities", "x")], false),
    ];
    for (name, specs, want) in cases {
        assert_eq!(placed(rich.clone(), specs, false), *want, "{name}");
    }
}

#[test]
fn multiattach_requires_a_multiattach_pool() {
    assert!(!placed(json!({}), &[], true));
    assert!(placed(json!({ "multiattach": true }), &[], true));
    // A type's own multiattach spec wins over the implicit one.
    assert!(placed(json!({}), &[("multiattach", "<is> False")], true));
}

#[test]
fn an_unreported_pool_flag_is_taken_from_the_backend_report() {
    let place = |backend_multiattach: Option<bool>| {
        let mut s = default_scheduler();
        let mut cache = s.new_cache();
        let mut caps = report("lvm-1", vec![pool("p", json!(100), json!(100), json!({}))]);
        if let Some(m) = backend_multiattach {
            caps.extra.insert("multiattach".into(), json!(m));
        }
        cache.update_service("node1@lvm", ServiceStatus::up("nova", NOW));
        cache.update_capabilities("node1@lvm", NOW, caps);
        let spec = RequestSpec { size_gb: 1, multiattach: true, ..RequestSpec::default() };
        s.schedule(&mut cache, &spec, NOW).is_ok()
    };
    assert!(place(Some(true)), "the backend says multiattach");
    assert!(!place(Some(false)));
    assert!(!place(None), "nobody says so: not multiattach");
}
