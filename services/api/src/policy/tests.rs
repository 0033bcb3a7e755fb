//! The check language, Cinder's personas and overrides from a policy file.

use super::*;

fn roles(names: &[&str]) -> Vec<String> {
    names.iter().map(|r| (*r).to_owned()).collect()
}

/// Whether a caller of `project` with `role_names` may apply `rule` to `target_project`.
fn allows(policy: &Policy, rule: &str, role_names: &[&str], project: &str, target_project: &str) -> bool {
    let roles = roles(role_names);
    let probe = Creds { user_id: "u", project_id: project, roles: &roles, is_admin: false };
    let is_admin = policy.allows("context_is_admin", &probe, &Target { project_id: project, user_id: "u" });
    let creds = Creds { is_admin, ..probe };
    policy.allows(rule, &creds, &Target { project_id: target_project, user_id: "u" })
}

const READER: &[&str] = &["reader"];
const MEMBER: &[&str] = &["member", "reader"];
const ADMIN: &[&str] = &["admin", "member", "reader"];

#[test]
fn every_default_parses_and_every_routed_rule_exists() {
    for (name, text) in DEFAULT_RULES {
        assert!(parse(text).is_ok(), "default {name}: {text}");
    }
    let policy = Policy::default();
    for rule in ROUTE_RULES.iter().map(|r| r.2).chain(ACTION_RULES.iter().map(|r| r.2)) {
        assert!(policy.rules.contains_key(rule), "{rule} has no default");
    }
}

#[test]
fn readers_read_members_write_admins_do_everything() {
    let p = Policy::default();
    for (rule, reader, member, admin) in [
        ("volume:get", true, true, true),
        ("volume:get_all", true, true, true),
        ("volume:create", false, true, true),
        ("volume:delete", false, true, true),
        ("volume:extend", false, true, true),
        ("volume_extension:volume_admin_actions:reset_status", false, false, true),
        ("volume:force_delete", false, false, true),
        ("volume_extension:type_create", false, false, true),
        ("volume_extension:services:index", false, false, true),
        ("ember:flows", false, false, true),
    ] {
        assert_eq!(allows(&p, rule, READER, "p1", "p1"), reader, "reader {rule}");
        assert_eq!(allows(&p, rule, MEMBER, "p1", "p1"), member, "member {rule}");
        assert_eq!(allows(&p, rule, ADMIN, "p1", "p1"), admin, "admin {rule}");
    }
}

#[test]
fn only_admins_act_on_other_projects() {
    let p = Policy::default();
    assert!(allows(&p, "volume_extension:quotas:show", MEMBER, "p1", "p1"));
    assert!(!allows(&p, "volume_extension:quotas:show", MEMBER, "p1", "p2"));
    assert!(!allows(&p, "volume:get", READER, "p1", "p2"));
    assert!(allows(&p, "volume_extension:quotas:show", ADMIN, "p1", "p2"));
    // A caller without any of the three roles may do nothing.
    assert!(!allows(&p, "volume:get_all", &["creator"], "p1", "p1"));
    assert!(!allows(&p, "no:such:rule", ADMIN, "p1", "p1"));
}

#[test]
fn a_policy_file_overrides_rules_by_name() {
    let mut p = Policy::default();
    let yaml = "# Cinder's format\n\"volume:create\": \"role:admin\"\n\
                volume_extension:volume_admin_actions:reset_status: 'rule:project_member_or_admin'\n\
                \"context_is_admin\": \"role:admin or role:cloud_admin\"\n";
    p.apply("policy.yaml", yaml).unwrap();
    assert!(!allows(&p, "volume:create", MEMBER, "p1", "p1"));
    assert!(allows(&p, "volume:create", ADMIN, "p1", "p1"));
    assert!(allows(&p, "volume_extension:volume_admin_actions:reset_status", MEMBER, "p1", "p1"));
    assert!(allows(&p, "volume_extension:type_create", &["cloud_admin"], "p1", "p1"));
    // Untouched rules keep their defaults.
    assert!(allows(&p, "volume:delete", MEMBER, "p1", "p1"));
    // JSON is YAML too (the old policy.json).
    p.apply("policy.json", r#"{"volume:delete": "!"}"#).unwrap();
    assert!(!allows(&p, "volume:delete", ADMIN, "p1", "p1"));
    p.apply("empty.yaml", "# nothing overridden\n").unwrap();
}

#[test]
fn a_wrong_policy_file_names_the_rule() {
    let mut p = Policy::default();
    for (yaml, needle) in [
        ("\"volume:create\": \"role:admin or\"", "volume:create"),
        ("\"volume:create\": \"(role:admin\"", "not closed"),
        ("\"volume:get\": \"http://example/check\"", "remote"),
        ("\"volume:get\": \"domain_name:x\"", "domain_name"),
        ("- a list", "YAML map"),
        ("\"volume:get\": [1]", "YAML map"),
    ] {
        let err = p.apply("policy.yaml", yaml).expect_err(yaml);
        assert!(err.to_string().contains(needle), "{yaml}: {err}");
        assert!(err.to_string().contains("policy.yaml"), "{err}");
    }
    assert!(Policy::load(Some(Path::new("/nonexistent/policy.yaml"))).is_err());
}

#[test]
fn the_check_language_has_oslo_precedence_and_literals() {
    let mut p = Policy::default();
    p.apply(
        "t",
        "a: \"role:x or role:y and role:z\"\nb: \"not (role:x or role:y)\"\nc: \"is_admin:True\"\n\
         d: \"project_id:'p9'\"\ne: \"@\"\nf: \"\"\nloop: \"rule:loop\"\ng: \"user_id:%(user_id)s\"\n",
    )
    .unwrap();
    assert!(allows(&p, "a", &["x"], "p1", "p1"));
    assert!(!allows(&p, "a", &["y"], "p1", "p1"));
    assert!(allows(&p, "a", &["y", "z"], "p1", "p1"));
    assert!(allows(&p, "b", &["z"], "p1", "p1"));
    assert!(!allows(&p, "b", &["y"], "p1", "p1"));
    assert!(allows(&p, "c", &["admin"], "p1", "p1"));
    assert!(!allows(&p, "c", &["member"], "p1", "p1"));
    assert!(allows(&p, "d", &[], "p9", "p1"));
    assert!(allows(&p, "e", &[], "p1", "p1"));
    assert!(allows(&p, "f", &[], "p1", "p1"));
    assert!(!allows(&p, "loop", ADMIN, "p1", "p1"));
    assert!(allows(&p, "g", &[], "p1", "p1"));
    assert!(allows(&p, "a", &["X"], "p1", "p1"), "roles compare without case");
}

#[test]
fn routes_and_actions_name_cinders_rules() {
    assert_eq!(rule_for("POST", "/volumes", ""), "volume:create");
    assert_eq!(rule_for("DELETE", "/volumes/{id}", "cascade=true"), "volume:delete");
    assert_eq!(rule_for("DELETE", "/volumes/{id}", "cascade=true&force=true"), "volume:force_delete");
    assert_eq!(rule_for("GET", "/something/new", ""), "ember:default_read");
    assert_eq!(rule_for("POST", "/something/new", ""), "ember:default_write");
    assert_eq!(action_collection("POST", "/volumes/{id}/action"), Some("volumes"));
    assert_eq!(action_collection("GET", "/volumes/{id}/action"), None);
    assert_eq!(action_collection("POST", "/volumes/{id}"), None);
    assert_eq!(
        action_rule("volumes", "os-reset_status"),
        "volume_extension:volume_admin_actions:reset_status"
    );
    assert_eq!(
        action_rule("snapshots", "os-reset_status"),
        "volume_extension:snapshot_admin_actions:reset_status"
    );
    assert_eq!(action_rule("volumes", "os-bogus"), "ember:default_write");
    assert!(is_admin_rule("volume_extension:volume_admin_actions:reset_status"));
    assert!(!is_admin_rule("volume:extend"));
}
