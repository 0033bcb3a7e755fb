//! Cinder's policy: rules named as Cinder names them (`volume:create`,
//! `volume_extension:volume_admin_actions:reset_status`...), written in oslo.policy's check
//! language, with Cinder's reader/member/admin defaults, overridden rule by rule by an
//! operator's `policy.yaml`.
//!
//! Every request under `/v3/{project_id}` is checked once, in the auth middleware
//! ([`rule_for`] names the rule of a method, route and action); handlers only ask
//! [`crate::auth::Caller::require_admin`] for the admin-only parts of a route, which passes
//! when the middleware already granted an admin rule for this request.

use std::collections::HashMap;
use std::path::Path;

/// Cinder's defaults (`cinder/policies/*.py`, secure-RBAC personas). Keystone's bootstrap
/// makes `admin` imply `member` and `member` imply `reader`, and tokens carry the implied
/// roles.
const DEFAULT_RULES: &[(&str, &str)] = &[
    ("context_is_admin", "role:admin"),
    ("admin_api", "is_admin:True or (role:admin and is_admin_project:True)"),
    (
        "admin_or_owner",
        "is_admin:True or (role:admin and is_admin_project:True) or project_id:%(project_id)s",
    ),
    ("project_reader", "role:reader and project_id:%(project_id)s"),
    ("project_member", "role:member and project_id:%(project_id)s"),
    ("project_reader_or_admin", "rule:project_reader or rule:context_is_admin"),
    ("project_member_or_admin", "rule:project_member or rule:context_is_admin"),
    // Routes without a rule of their own in Cinder.
    ("ember:default_read", "rule:project_reader_or_admin"),
    ("ember:default_write", "rule:project_member_or_admin"),
    ("ember:flows", "rule:admin_api"),
];

/// Rules whose default is a reader's.
const READ_RULES: &[&str] = &[
    "volume:get",
    "volume:get_all",
    "volume:get_volume_metadata",
    "volume:get_snapshot",
    "volume:get_all_snapshots",
    "volume:get_snapshot_metadata",
    "volume_extension:type_get",
    "volume_extension:type_get_all",
    "volume_extension:types_extra_specs:index",
    "volume_extension:types_extra_specs:show",
    "volume_extension:quotas:show",
    "limits_extension:used_limits",
    "volume:attachment_get",
    "volume:attachment_get_all",
    "backup:get",
    "backup:get_all",
];

/// Rules whose default is a member's.
const WRITE_RULES: &[&str] = &[
    "volume:create",
    "volume:update",
    "volume:delete",
    "volume:extend",
    "volume:extend_attached_volume",
    "volume:revert_to_snapshot",
    "volume:retype",
    "volume:update_readonly_flag",
    "volume:create_volume_metadata",
    "volume:update_volume_metadata",
    "volume:delete_volume_metadata",
    "volume:create_snapshot",
    "volume:update_snapshot",
    "volume:delete_snapshot",
    "volume:update_snapshot_metadata",
    "volume:delete_snapshot_metadata",
    "volume_extension:volume_actions:upload_image",
    "volume_extension:volume_actions:attach",
    "volume_extension:volume_actions:detach",
    "volume_extension:volume_actions:reserve",
    "volume_extension:volume_actions:unreserve",
    "volume_extension:volume_actions:begin_detaching",
    "volume_extension:volume_actions:roll_detaching",
    "volume_extension:volume_actions:initialize_connection",
    "volume_extension:volume_actions:terminate_connection",
    "volume:attachment_create",
    "volume:attachment_update",
    "volume:attachment_delete",
    "volume:attachment_complete",
    "backup:create",
    "backup:update",
    "backup:delete",
    "backup:restore",
];

/// Rules whose default is an admin's.
const ADMIN_RULES: &[&str] = &[
    "volume:force_delete",
    "volume_extension:volume_admin_actions:reset_status",
    "volume_extension:volume_admin_actions:force_delete",
    "volume_extension:volume_admin_actions:force_detach",
    "volume_extension:volume_admin_actions:migrate_volume",
    "volume_extension:volume_admin_actions:migrate_volume_completion",
    "volume_extension:snapshot_admin_actions:reset_status",
    "volume_extension:snapshot_admin_actions:force_delete",
    "snapshot_extension:snapshot_actions:update_snapshot_status",
    "volume_extension:type_create",
    "volume_extension:type_update",
    "volume_extension:type_delete",
    "volume_extension:types_extra_specs:create",
    "volume_extension:types_extra_specs:update",
    "volume_extension:types_extra_specs:delete",
    "volume_extension:volume_type_access",
    "volume_extension:volume_type_access:addProjectAccess",
    "volume_extension:volume_type_access:removeProjectAccess",
    "volume_extension:quotas:update",
    "volume_extension:quotas:delete",
    "volume_extension:services:index",
    "volume_extension:services:update",
    "backup:backup-export",
    "backup:backup-import",
    "volume_extension:backup_admin_actions:reset_status",
    "volume_extension:backup_admin_actions:force_delete",
];

/// The rule of each route under `/v3/{project_id}` (method, route as routed, rule).
/// Routes not listed fall back to `ember:default_read` (GET, HEAD) or `ember:default_write`.
const ROUTE_RULES: &[(&str, &str, &str)] = &[
    ("GET", "/backups", "backup:get_all"),
    ("GET", "/backups/detail", "backup:get_all"),
    ("POST", "/backups", "backup:create"),
    ("GET", "/backups/{id}", "backup:get"),
    ("PUT", "/backups/{id}", "backup:update"),
    ("DELETE", "/backups/{id}", "backup:delete"),
    ("POST", "/backups/{id}/restore", "backup:restore"),
    ("GET", "/backups/{id}/export_record", "backup:backup-export"),
    ("POST", "/backups/import_record", "backup:backup-import"),
    ("GET", "/volumes", "volume:get_all"),
    ("GET", "/volumes/detail", "volume:get_all"),
    ("GET", "/volumes/summary", "volume:get_all"),
    ("POST", "/volumes", "volume:create"),
    ("GET", "/volumes/{id}", "volume:get"),
    ("PUT", "/volumes/{id}", "volume:update"),
    ("DELETE", "/volumes/{id}", "volume:delete"),
    ("GET", "/volumes/{id}/metadata", "volume:get_volume_metadata"),
    ("GET", "/volumes/{id}/metadata/{key}", "volume:get_volume_metadata"),
    ("POST", "/volumes/{id}/metadata", "volume:create_volume_metadata"),
    ("PUT", "/volumes/{id}/metadata", "volume:update_volume_metadata"),
    ("PUT", "/volumes/{id}/metadata/{key}", "volume:update_volume_metadata"),
    ("DELETE", "/volumes/{id}/metadata/{key}", "volume:delete_volume_metadata"),
    ("GET", "/snapshots", "volume:get_all_snapshots"),
    ("GET", "/snapshots/detail", "volume:get_all_snapshots"),
    ("POST", "/snapshots", "volume:create_snapshot"),
    ("GET", "/snapshots/{id}", "volume:get_snapshot"),
    ("PUT", "/snapshots/{id}", "volume:update_snapshot"),
    ("DELETE", "/snapshots/{id}", "volume:delete_snapshot"),
    ("GET", "/snapshots/{id}/metadata", "volume:get_snapshot_metadata"),
    ("GET", "/snapshots/{id}/metadata/{key}", "volume:get_snapshot_metadata"),
    ("POST", "/snapshots/{id}/metadata", "volume:update_snapshot_metadata"),
    ("PUT", "/snapshots/{id}/metadata", "volume:update_snapshot_metadata"),
    ("PUT", "/snapshots/{id}/metadata/{key}", "volume:update_snapshot_metadata"),
    ("DELETE", "/snapshots/{id}/metadata/{key}", "volume:delete_snapshot_metadata"),
    ("GET", "/types", "volume_extension:type_get_all"),
    ("GET", "/types/default", "volume_extension:type_get"),
    ("POST", "/types", "volume_extension:type_create"),
    ("GET", "/types/{id}", "volume_extension:type_get"),
    ("PUT", "/types/{id}", "volume_extension:type_update"),
    ("DELETE", "/types/{id}", "volume_extension:type_delete"),
    ("GET", "/types/{id}/os-volume-type-access", "volume_extension:volume_type_access"),
    ("GET", "/types/{id}/extra_specs", "volume_extension:types_extra_specs:index"),
    ("GET", "/types/{id}/extra_specs/{key}", "volume_extension:types_extra_specs:show"),
    ("POST", "/types/{id}/extra_specs", "volume_extension:types_extra_specs:create"),
    ("PUT", "/types/{id}/extra_specs/{key}", "volume_extension:types_extra_specs:update"),
    ("DELETE", "/types/{id}/extra_specs/{key}", "volume_extension:types_extra_specs:delete"),
    ("GET", "/os-quota-sets/{id}", "volume_extension:quotas:show"),
    ("GET", "/os-quota-sets/{id}/defaults", "volume_extension:quotas:show"),
    ("PUT", "/os-quota-sets/{id}", "volume_extension:quotas:update"),
    ("DELETE", "/os-quota-sets/{id}", "volume_extension:quotas:delete"),
    ("GET", "/limits", "limits_extension:used_limits"),
    ("GET", "/os-services", "volume_extension:services:index"),
    ("PUT", "/os-services/{action}", "volume_extension:services:update"),
    ("GET", "/flows", "ember:flows"),
    ("GET", "/flows/{id}", "ember:flows"),
    ("GET", "/flows/{id}/graph", "ember:flows"),
    ("POST", "/flows/{id}/action", "ember:flows"),
    ("GET", "/volumes/{id}/flows", "ember:flows"),
    ("GET", "/snapshots/{id}/flows", "ember:flows"),
    ("GET", "/attachments", "volume:attachment_get_all"),
    ("GET", "/attachments/detail", "volume:attachment_get_all"),
    ("GET", "/attachments/{id}", "volume:attachment_get"),
    ("POST", "/attachments", "volume:attachment_create"),
    ("PUT", "/attachments/{id}", "volume:attachment_update"),
    ("DELETE", "/attachments/{id}", "volume:attachment_delete"),
];

/// The rule of each action (`POST .../{id}/action` with body `{"<action>": ...}`), by the
/// collection the action is on.
const ACTION_RULES: &[(&str, &str, &str)] = &[
    ("backups", "os-reset_status", "volume_extension:backup_admin_actions:reset_status"),
    ("backups", "os-force_delete", "volume_extension:backup_admin_actions:force_delete"),
    ("volumes", "os-extend", "volume:extend"),
    ("volumes", "os-set_bootable", "volume:update"),
    ("volumes", "os-update_readonly_flag", "volume:update_readonly_flag"),
    ("volumes", "os-retype", "volume:retype"),
    ("volumes", "revert", "volume:revert_to_snapshot"),
    ("volumes", "os-reset_status", "volume_extension:volume_admin_actions:reset_status"),
    ("volumes", "os-force_delete", "volume_extension:volume_admin_actions:force_delete"),
    ("volumes", "os-force_detach", "volume_extension:volume_admin_actions:force_detach"),
    ("volumes", "os-migrate_volume", "volume_extension:volume_admin_actions:migrate_volume"),
    (
        "volumes",
        "os-migrate_volume_completion",
        "volume_extension:volume_admin_actions:migrate_volume_completion",
    ),
    ("volumes", "os-volume_upload_image", "volume_extension:volume_actions:upload_image"),
    ("volumes", "os-attach", "volume_extension:volume_actions:attach"),
    ("volumes", "os-detach", "volume_extension:volume_actions:detach"),
    ("volumes", "os-reserve", "volume_extension:volume_actions:reserve"),
    ("volumes", "os-unreserve", "volume_extension:volume_actions:unreserve"),
    ("volumes", "os-begin_detaching", "volume_extension:volume_actions:begin_detaching"),
    ("volumes", "os-roll_detaching", "volume_extension:volume_actions:roll_detaching"),
    ("volumes", "os-initialize_connection", "volume_extension:volume_actions:initialize_connection"),
    ("volumes", "os-terminate_connection", "volume_extension:volume_actions:terminate_connection"),
    ("volumes", "os-set_image_metadata", "volume:update_volume_metadata"),
    ("volumes", "os-unset_image_metadata", "volume:delete_volume_metadata"),
    ("volumes", "os-show_image_metadata", "volume:get_volume_metadata"),
    ("snapshots", "os-reset_status", "volume_extension:snapshot_admin_actions:reset_status"),
    ("snapshots", "os-force_delete", "volume_extension:snapshot_admin_actions:force_delete"),
    ("snapshots", "os-update_snapshot_status", "snapshot_extension:snapshot_actions:update_snapshot_status"),
    ("types", "addProjectAccess", "volume_extension:volume_type_access:addProjectAccess"),
    ("types", "removeProjectAccess", "volume_extension:volume_type_access:removeProjectAccess"),
    ("attachments", "os-complete", "volume:attachment_complete"),
];

/// A policy file that cannot be used: which rule (or the file), and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("policy {source_name}: {reason}")]
pub struct PolicyError {
    pub source_name: String,
    pub reason: String,
}

/// One parsed check string.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Check {
    True,
    False,
    Rule(String),
    Role(String),
    /// `key:value`: the caller's `key` equals `value` (`%(name)s` is the target's `name`).
    Generic(String, String),
    Not(Box<Check>),
    And(Vec<Check>),
    Or(Vec<Check>),
}

/// What the check strings compare: the caller's credentials.
#[derive(Debug, Clone, Copy)]
pub struct Creds<'a> {
    pub user_id: &'a str,
    pub project_id: &'a str,
    pub roles: &'a [String],
    pub is_admin: bool,
}

/// What a request acts on: the project (and user) of the target.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    pub project_id: &'a str,
    pub user_id: &'a str,
}

/// Every rule by name: Cinder's defaults, with an operator's overrides applied.
#[derive(Debug, Clone)]
pub struct Policy {
    rules: HashMap<String, Check>,
}

impl Default for Policy {
    fn default() -> Self {
        let mut rules: HashMap<String, Check> = HashMap::new();
        let personas = [
            (READ_RULES, "rule:project_reader_or_admin"),
            (WRITE_RULES, "rule:project_member_or_admin"),
            (ADMIN_RULES, "rule:admin_api"),
        ];
        for (names, check) in personas {
            for name in names {
                rules.insert((*name).to_owned(), Check::Rule(check["rule:".len()..].to_owned()));
            }
        }
        for (name, text) in DEFAULT_RULES {
            // The defaults are constants parsed by a test; a typo cannot reach a release.
            let check = parse(text).unwrap_or(Check::False);
            rules.insert((*name).to_owned(), check);
        }
        Self { rules }
    }
}

impl Policy {
    /// Cinder's defaults, then the rules of `path` (YAML or JSON, `name: check string`),
    /// or the defaults alone without a file.
    pub fn load(path: Option<&Path>) -> Result<Self, PolicyError> {
        let mut policy = Self::default();
        if let Some(path) = path {
            let source_name = path.display().to_string();
            let text = std::fs::read_to_string(path)
                .map_err(|e| PolicyError { source_name: source_name.clone(), reason: e.to_string() })?;
            policy.apply(&source_name, &text)?;
        }
        Ok(policy)
    }

    /// Applies the rules of a policy file's text over the current ones.
    pub fn apply(&mut self, source_name: &str, text: &str) -> Result<(), PolicyError> {
        let error = |reason: String| PolicyError { source_name: source_name.to_owned(), reason };
        let rules: Option<HashMap<String, String>> = serde_yaml_ng::from_str(text)
            .map_err(|e| error(format!("not a YAML map of rule name to check string: {e}")))?;
        for (name, text) in rules.unwrap_or_default() {
            let check = parse(&text).map_err(|reason| error(format!("rule {name:?}: {reason}")))?;
            self.rules.insert(name, check);
        }
        Ok(())
    }

    /// Whether `rule` allows `creds` to act on `target`. An unknown rule refuses.
    pub fn allows(&self, rule: &str, creds: &Creds<'_>, target: &Target<'_>) -> bool {
        self.rules.get(rule).is_some_and(|check| self.eval(check, creds, target, 0))
    }

    fn eval(&self, check: &Check, creds: &Creds<'_>, target: &Target<'_>, depth: u32) -> bool {
        // A rule that refers to itself, directly or not, refuses rather than loop.
        if depth > 32 {
            return false;
        }
        match check {
            Check::True => true,
            Check::False => false,
            Check::Rule(name) => self.rules.get(name).is_some_and(|c| self.eval(c, creds, target, depth + 1)),
            Check::Role(role) => creds.roles.iter().any(|r| r.eq_ignore_ascii_case(role)),
            Check::Generic(key, value) => generic(key, value, creds, target),
            Check::Not(inner) => !self.eval(inner, creds, target, depth + 1),
            Check::And(all) => all.iter().all(|c| self.eval(c, creds, target, depth + 1)),
            Check::Or(any) => any.iter().any(|c| self.eval(c, creds, target, depth + 1)),
        }
    }
}

/// `key:value` as oslo.policy's `GenericCheck`: `value` may name a target attribute
/// (`%(project_id)s`), be quoted, or be a literal (`True`).
fn generic(key: &str, value: &str, creds: &Creds<'_>, target: &Target<'_>) -> bool {
    let wanted = if let Some(name) = value.strip_prefix("%(").and_then(|v| v.strip_suffix(")s")) {
        match name {
            "project_id" | "tenant_id" => target.project_id,
            "user_id" => target.user_id,
            _ => return false,
        }
    } else {
        value.trim_matches(|c| c == '\'' || c == '"')
    };
    let bool_str = |b: bool| if b { "True" } else { "False" };
    let actual = match key {
        "project_id" | "tenant_id" => creds.project_id,
        "user_id" => creds.user_id,
        "is_admin" => bool_str(creds.is_admin),
        // Ember has no admin project: every project counts as one, as in Cinder without
        // Keystone's `admin_project_name`.
        "is_admin_project" => "True",
        _ => return false,
    };
    actual == wanted
}

/// The rule that decides `method` on `route` (the path as routed under the project, e.g.
/// `/volumes/{id}`); `query` decides a forced delete. Actions: [`action_rule`].
pub fn rule_for(method: &str, route: &str, query: &str) -> &'static str {
    let force = route == "/volumes/{id}"
        && method == "DELETE"
        && query.split('&').any(|kv| matches!(kv, "force=true" | "force=True" | "force=1"));
    if force {
        return "volume:force_delete";
    }
    ROUTE_RULES.iter().find(|(m, r, _)| *m == method && *r == route).map(|(_, _, rule)| *rule).unwrap_or(
        if matches!(method, "GET" | "HEAD") { "ember:default_read" } else { "ember:default_write" },
    )
}

/// The collection of an action route (`/volumes/{id}/action` → `volumes`), if it is one.
pub fn action_collection<'r>(method: &str, route: &'r str) -> Option<&'r str> {
    let collection = route.strip_prefix('/')?.strip_suffix("/{id}/action")?;
    (method == "POST" && !collection.contains('/')).then_some(collection)
}

/// The rule of action `name` on `collection`; an unknown action is a member's write (the
/// handler answers it with a 400).
pub fn action_rule(collection: &str, name: &str) -> &'static str {
    ACTION_RULES
        .iter()
        .find(|(c, a, _)| *c == collection && *a == name)
        .map_or("ember:default_write", |(_, _, rule)| *rule)
}

/// Whether the default of `rule` is an admin's: passing it also passes the handler's
/// admin checks of the same request.
pub fn is_admin_rule(rule: &str) -> bool {
    ADMIN_RULES.contains(&rule) || rule == "ember:flows"
}

/// Parses a check string: `@`, `!`, `rule:x`, `role:x`, `key:value`, `not`, `and`, `or`
/// and parentheses, `and` binding tighter than `or` (oslo.policy's language). An empty
/// string allows everyone.
fn parse(text: &str) -> Result<Check, String> {
    // As oslo.policy: parentheses are peeled off the words, so `%(project_id)s` stays whole.
    let mut tokens: Vec<&str> = Vec::new();
    for word in text.split_whitespace() {
        let inner = word.trim_start_matches('(');
        tokens.extend(std::iter::repeat_n("(", word.len() - inner.len()));
        let core = inner.trim_end_matches(')');
        if !core.is_empty() {
            tokens.push(core);
        }
        tokens.extend(std::iter::repeat_n(")", inner.len() - core.len()));
    }
    if tokens.is_empty() {
        return Ok(Check::True);
    }
    let mut parser = Parser { tokens, at: 0 };
    let check = parser.or_expr()?;
    match parser.tokens.get(parser.at) {
        None => Ok(check),
        Some(t) => Err(format!("unexpected {t:?}")),
    }
}

struct Parser<'a> {
    tokens: Vec<&'a str>,
    at: usize,
}

impl Parser<'_> {
    fn next_is(&self, word: &str) -> bool {
        self.tokens.get(self.at).is_some_and(|t| t.eq_ignore_ascii_case(word))
    }

    fn or_expr(&mut self) -> Result<Check, String> {
        let mut parts = vec![self.and_expr()?];
        while self.next_is("or") {
            self.at += 1;
            parts.push(self.and_expr()?);
        }
        Ok(if parts.len() == 1 { parts.remove(0) } else { Check::Or(parts) })
    }

    fn and_expr(&mut self) -> Result<Check, String> {
        let mut parts = vec![self.not_expr()?];
        while self.next_is("and") {
            self.at += 1;
            parts.push(self.not_expr()?);
        }
        Ok(if parts.len() == 1 { parts.remove(0) } else { Check::And(parts) })
    }

    fn not_expr(&mut self) -> Result<Check, String> {
        if self.next_is("not") {
            self.at += 1;
            return Ok(Check::Not(Box::new(self.not_expr()?)));
        }
        let token = *self.tokens.get(self.at).ok_or("the check ends too early")?;
        self.at += 1;
        if token == "(" {
            let inner = self.or_expr()?;
            if self.tokens.get(self.at) != Some(&")") {
                return Err("a '(' is not closed".into());
            }
            self.at += 1;
            return Ok(inner);
        }
        check(token)
    }
}

fn check(token: &str) -> Result<Check, String> {
    match token {
        "@" => return Ok(Check::True),
        "!" => return Ok(Check::False),
        _ => {}
    }
    let (kind, value) = token.split_once(':').ok_or_else(|| format!("{token:?} is not a check"))?;
    if value.is_empty() {
        return Err(format!("{token:?} has no value"));
    }
    match kind {
        "rule" => Ok(Check::Rule(value.to_owned())),
        "role" => Ok(Check::Role(value.to_owned())),
        "http" | "https" => Err(format!("{token:?}: remote checks are not supported")),
        "project_id" | "tenant_id" | "user_id" | "is_admin" | "is_admin_project" => {
            Ok(Check::Generic(kind.to_owned(), value.to_owned()))
        }
        _ => Err(format!("{token:?}: Ember knows no attribute {kind:?}")),
    }
}

#[cfg(test)]
mod tests;
