//! `/attachments` through the real application on a real database, with
//! `TestAttachOps` standing in for the attach flows: the lifecycle, Cinder's views,
//! bad bodies (that change nothing), microversion gates, project isolation and pages.

mod common;

use std::collections::BTreeSet;

use axum::http::{Method, StatusCode};
use chrono::{Duration, Utc};
use serde_json::{Value, json};

use common::{ADMIN, Answer, Harness};
use ember_common::model::{AttachStatus, VolumeAttachment, VolumeStatus};
use ember_common::repo::{AttachmentRepo, VolumeRepo};

fn sample(name: &str) -> Value {
    let path = format!("{}/tests/samples/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object().map(|o| o.keys().cloned().collect()).unwrap_or_default()
}

const SERVER: &str = "31c79baf-b59e-469c-979f-1df4ecb6eea7";

fn connector() -> Value {
    json!({"host": "node1", "initiator": "iqn.1993-08.org.debian:01:cad181614cec", "ip": "192.168.1.20",
           "platform": "x86_64", "os_type": "linux2", "multipath": false})
}

/// An `available` volume of `token`'s project.
async fn available_volume(h: &Harness, token: &str) -> String {
    let id = h.create_volume(token, json!({"size": 1})).await;
    h.set_status(&id, VolumeStatus::Available).await;
    id
}

async fn volume_status(h: &Harness, id: &str) -> VolumeStatus {
    h.repo.get_volume(id).await.unwrap().status
}

/// Every live attachment of every project.
async fn attachment_rows(h: &Harness) -> Vec<VolumeAttachment> {
    h.repo.list_attachments(None, None).await.unwrap()
}

fn create_body(volume: &str) -> Value {
    json!({"attachment": {"volume_uuid": volume, "instance_uuid": SERVER}})
}

#[tokio::test]
async fn an_attachment_goes_reserved_attaching_attached_and_away() {
    let h = Harness::sqlite().await;
    let vol = available_volume(&h, ADMIN).await;

    let a = h.post("/attachments", ADMIN, "3.27", create_body(&vol)).await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.body);
    let att = &a.body["attachment"];
    assert_eq!(keys(att), keys(&sample("attachment-create-response.json")["attachment"]));
    assert_eq!((att["status"].as_str(), att["instance"].as_str()), (Some("reserved"), Some(SERVER)));
    assert_eq!((att["attached_at"].as_str(), att["detached_at"].as_str()), (Some(""), Some("")));
    assert_eq!((att["attach_mode"].as_str(), &att["connection_info"]), (Some("rw"), &Value::Null));
    let id = att["id"].as_str().unwrap().to_owned();
    assert_eq!(volume_status(&h, &vol).await, VolumeStatus::Reserved);

    let body = json!({"attachment": {"connector": connector()}});
    let a = h.call(Method::PUT, &format!("/attachments/{id}"), ADMIN, "3.27", Some(body)).await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.body);
    assert_eq!(a.body["attachment"]["status"], "attaching");
    let info = &a.body["attachment"]["connection_info"];
    assert_eq!((info["attachment_id"].as_str(), info.get("data")), (Some(id.as_str()), None), "flattened");
    assert_eq!(volume_status(&h, &vol).await, VolumeStatus::Attaching);

    let path = format!("/attachments/{id}/action");
    let a = h.post(&path, ADMIN, "3.44", json!({"os-complete": null})).await;
    assert_eq!((a.status, &a.body), (StatusCode::NO_CONTENT, &Value::Null));
    assert_eq!(volume_status(&h, &vol).await, VolumeStatus::InUse);
    let shown = h.get(&format!("/attachments/{id}"), ADMIN, "3.27").await;
    assert_eq!(shown.body["attachment"]["status"], "attached");
    assert_eq!(shown.body["attachment"]["attached_at"].as_str().map(str::len), Some(26));

    // The volume lists it as in parameters.yaml's `attachments` example.
    let v = h.get(&format!("/volumes/{vol}"), ADMIN, "3.0").await.body["volume"].clone();
    let entry = &v["attachments"][0];
    let cinder: BTreeSet<String> =
        ["server_id", "attachment_id", "attached_at", "host_name", "volume_id", "device", "id"]
            .map(String::from)
            .into();
    assert_eq!(keys(entry), cinder);
    assert_eq!(
        (entry["attachment_id"].as_str(), entry["server_id"].as_str()),
        (Some(id.as_str()), Some(SERVER))
    );
    assert_eq!((entry["id"].as_str(), entry["host_name"].as_str()), (Some(vol.as_str()), Some("node1")));

    let a = h.call(Method::DELETE, &format!("/attachments/{id}"), ADMIN, "3.27", None).await;
    assert_eq!((a.status, &a.body), (StatusCode::OK, &json!({"attachments": []})));
    assert_eq!(volume_status(&h, &vol).await, VolumeStatus::Available);
    h.get(&format!("/attachments/{id}"), ADMIN, "3.27").await.fault(404, "itemNotFound");
    h.call(Method::DELETE, &format!("/attachments/{id}"), ADMIN, "3.27", None)
        .await
        .fault(404, "itemNotFound");
    h.cleanup().await;
}

#[tokio::test]
async fn a_connector_at_create_exports_at_once_and_mode_is_taken_from_3_54() {
    let h = Harness::sqlite().await;
    let vol = available_volume(&h, ADMIN).await;
    let body = json!({"attachment": {"volume_uuid": vol, "connector": connector(), "mode": "ro"}});
    let a = h.post("/attachments", ADMIN, "3.54", body).await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.body);
    let att = &a.body["attachment"];
    assert_eq!((att["status"].as_str(), att["attach_mode"].as_str()), (Some("attaching"), Some("ro")));
    assert_eq!(att["instance"], Value::Null, "no server");
    assert_eq!(att["connection_info"]["access_mode"], "ro");
    assert_eq!(volume_status(&h, &vol).await, VolumeStatus::Attaching);
    // openstacksdk sends the attachment's id as the value of `os-complete`.
    let id = att["id"].as_str().unwrap().to_owned();
    let done = h.post(&format!("/attachments/{id}/action"), ADMIN, "3.44", json!({"os-complete": id})).await;
    assert_eq!(done.status, StatusCode::NO_CONTENT, "{:?}", done.body);
    assert_eq!(volume_status(&h, &vol).await, VolumeStatus::InUse);

    // An empty connector is none, as Cinder reads it: the attachment is only reserved.
    let other = available_volume(&h, ADMIN).await;
    let body = json!({"attachment": {"volume_uuid": other, "connector": {}, "instance_uuid": null}});
    let a = h.post("/attachments", ADMIN, "3.27", body).await;
    assert_eq!(a.body["attachment"]["status"], "reserved", "{:?}", a.body);

    // A volume in use elsewhere (not multiattach) is refused by the operations: 400.
    let again = h.post("/attachments", ADMIN, "3.27", create_body(&vol)).await;
    again.fault(400, "badRequest");
    assert_eq!(attachment_rows(&h).await.len(), 2);
    h.cleanup().await;
}

/// A refused request: its status and fault name, and a word its message must hold.
struct Refusal {
    method: Method,
    path: String,
    mv: &'static str,
    body: Option<Value>,
    status: u16,
    word: &'static str,
}

fn refusal(
    method: Method,
    path: &str,
    mv: &'static str,
    body: Option<Value>,
    status: u16,
    word: &'static str,
) -> Refusal {
    Refusal { method, path: path.to_owned(), mv, body, status, word }
}

#[tokio::test]
async fn bad_requests_are_refused_with_a_fault_naming_the_field_and_change_nothing() {
    let h = Harness::sqlite().await;
    let vol = available_volume(&h, ADMIN).await;
    let a = h.post("/attachments", ADMIN, "3.27", create_body(&vol)).await;
    let id = a.body["attachment"]["id"].as_str().unwrap().to_owned();
    let fresh = available_volume(&h, ADMIN).await;
    let unknown = uuid::Uuid::new_v4().to_string();
    let att = format!("/attachments/{id}");
    let action = format!("{att}/action");
    let post = Method::POST;
    let put = Method::PUT;
    let cases = vec![
        refusal(post.clone(), "/attachments", "3.27", Some(json!({"attachment": {}})), 400, "volume_uuid"),
        refusal(
            post.clone(),
            "/attachments",
            "3.27",
            Some(json!({"attachment": {"volume_uuid": "x"}})),
            400,
            "volume_uuid",
        ),
        refusal(
            post.clone(),
            "/attachments",
            "3.27",
            Some(json!({"attachment": {"volume_uuid": 7}})),
            400,
            "volume_uuid",
        ),
        refusal(
            post.clone(),
            "/attachments",
            "3.27",
            Some(json!({"attachment": {"volume_uuid": fresh, "instance_uuid": "srv"}})),
            400,
            "instance_uuid",
        ),
        refusal(
            post.clone(),
            "/attachments",
            "3.27",
            Some(json!({"attachment": {"volume_uuid": fresh, "connector": "host1"}})),
            400,
            "connector",
        ),
        refusal(
            post.clone(),
            "/attachments",
            "3.27",
            Some(json!({"attachment": {"volume_uuid": fresh, "connector": [1]}})),
            400,
            "connector",
        ),
        refusal(
            post.clone(),
            "/attachments",
            "3.53",
            Some(json!({"attachment": {"volume_uuid": fresh, "mode": "ro"}})),
            400,
            "mode",
        ),
        refusal(
            post.clone(),
            "/attachments",
            "3.54",
            Some(json!({"attachment": {"volume_uuid": fresh, "mode": "rx"}})),
            400,
            "mode",
        ),
        refusal(
            post.clone(),
            "/attachments",
            "3.54",
            Some(json!({"attachment": {"volume_uuid": fresh, "mode": null}})),
            400,
            "mode",
        ),
        refusal(
            post.clone(),
            "/attachments",
            "3.27",
            Some(json!({"attachment": {"volume_uuid": fresh, "colour": 1}})),
            400,
            "colour",
        ),
        refusal(
            post.clone(),
            "/attachments",
            "3.27",
            Some(json!({"attachment": {"volume_uuid": fresh}, "x": 1})),
            400,
            "'x'",
        ),
        refusal(post.clone(), "/attachments", "3.27", Some(json!({"attachment": "x"})), 400, "attachment"),
        refusal(post.clone(), "/attachments", "3.27", Some(json!({})), 400, "attachment"),
        refusal(post.clone(), "/attachments", "3.27", Some(json!([1])), 400, "Malformed"),
        refusal(post.clone(), "/attachments", "3.27", None, 400, "body"),
        refusal(
            post.clone(),
            "/attachments",
            "3.27",
            Some(json!({"attachment": {"volume_uuid": unknown}})),
            404,
            "could not be found",
        ),
        refusal(put.clone(), &att, "3.27", Some(json!({"attachment": {}})), 400, "connector"),
        refusal(put.clone(), &att, "3.27", Some(json!({"attachment": {"connector": {}}})), 400, "connector"),
        refusal(put.clone(), &att, "3.27", Some(json!({"attachment": {"connector": "h"}})), 400, "connector"),
        refusal(
            put.clone(),
            &att,
            "3.27",
            Some(json!({"attachment": {"connector": {"host": "h"}, "mode": "ro"}})),
            400,
            "mode",
        ),
        refusal(put.clone(), &att, "3.27", Some(json!({"connector": {"host": "h"}})), 400, "connector"),
        refusal(
            put.clone(),
            &format!("/attachments/{unknown}"),
            "3.27",
            Some(json!({"attachment": {"connector": {"host": "h"}}})),
            404,
            "could not be found",
        ),
        refusal(post.clone(), &action, "3.44", Some(json!({"os-finish": {}})), 400, "os-finish"),
        refusal(
            post.clone(),
            &action,
            "3.44",
            Some(json!({"os-complete": {}, "os-finish": {}})),
            400,
            "one action",
        ),
        refusal(
            post.clone(),
            &format!("/attachments/{unknown}/action"),
            "3.44",
            Some(json!({"os-complete": {}})),
            404,
            "could not be found",
        ),
        refusal(Method::DELETE, &format!("/attachments/{unknown}"), "3.27", None, 404, "could not be found"),
        refusal(Method::PATCH, &att, "3.27", Some(json!({})), 405, "not allowed"),
    ];
    let before = (attachment_rows(&h).await, h.volume_rows().await);
    for case in cases {
        let a = h.call(case.method.clone(), &case.path, ADMIN, case.mv, case.body.clone()).await;
        let name = match case.status {
            400 => "badRequest",
            404 => "itemNotFound",
            _ => "badMethod",
        };
        let message = a.fault(case.status, name);
        assert!(message.contains(case.word), "{} {} {:?}: {message}", case.method, case.path, case.body);
        assert_eq!(
            (attachment_rows(&h).await, h.volume_rows().await),
            before,
            "{} {:?}",
            case.path,
            case.body
        );
    }
    h.cleanup().await;
}

#[tokio::test]
async fn below_3_27_no_attachment_route_exists_and_complete_needs_3_44() {
    let h = Harness::sqlite().await;
    let vol = available_volume(&h, ADMIN).await;
    let a = h.post("/attachments", ADMIN, "3.27", create_body(&vol)).await;
    let id = a.body["attachment"]["id"].as_str().unwrap().to_owned();
    let connect = json!({"attachment": {"connector": connector()}});
    for (method, path, body) in [
        (Method::GET, "/attachments".to_owned(), None),
        (Method::GET, "/attachments/detail".to_owned(), None),
        (Method::GET, format!("/attachments/{id}"), None),
        (Method::POST, "/attachments".to_owned(), Some(create_body(&vol))),
        (Method::PUT, format!("/attachments/{id}"), Some(connect)),
        (Method::POST, format!("/attachments/{id}/action"), Some(json!({"os-complete": {}}))),
        (Method::DELETE, format!("/attachments/{id}"), None),
    ] {
        h.call(method.clone(), &path, ADMIN, "3.26", body).await.fault(404, "itemNotFound");
    }
    h.post(&format!("/attachments/{id}/action"), ADMIN, "3.43", json!({"os-complete": {}}))
        .await
        .fault(404, "itemNotFound");
    let rows = attachment_rows(&h).await;
    assert_eq!((rows.len(), rows[0].attach_status), (1, AttachStatus::Reserved));
    h.cleanup().await;
}

#[tokio::test]
async fn another_projects_volume_or_attachment_reads_as_an_unknown_one() {
    let h = Harness::with_tokens().await;
    let theirs = available_volume(&h, "bob").await;
    let a = h.post("/attachments", "bob", "3.44", create_body(&theirs)).await;
    let id = a.body["attachment"]["id"].as_str().unwrap().to_owned();
    let unknown = uuid::Uuid::new_v4().to_string();
    let connect = json!({"attachment": {"connector": connector()}});
    let before = (attachment_rows(&h).await, h.volume_rows().await);
    for (method, suffix, body) in [
        (Method::GET, "", None),
        (Method::PUT, "", Some(connect)),
        (Method::POST, "/action", Some(json!({"os-complete": {}}))),
        (Method::DELETE, "", None),
    ] {
        let mine = h
            .call(method.clone(), &format!("/attachments/{id}{suffix}"), "alice", "3.44", body.clone())
            .await;
        let none =
            h.call(method.clone(), &format!("/attachments/{unknown}{suffix}"), "alice", "3.44", body).await;
        let message = mine.fault(404, "itemNotFound");
        assert_eq!(
            message.replace(&id, "ID"),
            none.fault(404, "itemNotFound").replace(&unknown, "ID"),
            "{method}"
        );
    }
    let mine = h.post("/attachments", "alice", "3.44", create_body(&theirs)).await;
    let none = h.post("/attachments", "alice", "3.44", create_body(&unknown)).await;
    assert_eq!(
        mine.fault(404, "itemNotFound").replace(&theirs, "ID"),
        none.fault(404, "itemNotFound").replace(&unknown, "ID")
    );
    assert_eq!(h.get("/attachments", "alice", "3.44").await.body, json!({"attachments": []}));
    let all = h.get("/attachments?all_tenants=1", "alice", "3.44").await;
    assert_eq!(all.body, json!({"attachments": []}), "all_tenants is for admins");
    let all = h.get("/attachments?all_tenants=1", "admin", "3.44").await;
    assert_eq!(all.body["attachments"][0]["id"], id.as_str());
    assert_eq!(h.get(&format!("/attachments/{id}"), "admin", "3.44").await.status, StatusCode::OK);
    assert_eq!((attachment_rows(&h).await, h.volume_rows().await), before);
    h.cleanup().await;
}

#[tokio::test]
async fn views_equal_cinders_samples_once_ids_and_times_are_redacted() {
    let h = Harness::sqlite().await;
    let vol = available_volume(&h, ADMIN).await;
    let body = json!({"attachment": {"volume_uuid": vol, "instance_uuid": SERVER, "connector": connector(), "mode": "ro"}});
    let a = h.post("/attachments", ADMIN, "3.54", body).await;
    let id = a.body["attachment"]["id"].as_str().unwrap().to_owned();
    // Cinder's samples show a stale `{}` connection info and both times set.
    let redact = |v: &Value| -> Value {
        let mut v = v.clone();
        for key in ["id", "instance", "volume_id", "attached_at", "detached_at", "connection_info"] {
            if v.get(key).is_some() {
                v[key] = json!("<redacted>");
            }
        }
        v
    };
    for (ours, file) in [
        (a.body["attachment"].clone(), "attachment-create-response.json"),
        (
            h.get(&format!("/attachments/{id}"), ADMIN, "3.27").await.body["attachment"].clone(),
            "attachment-show-response.json",
        ),
    ] {
        assert_eq!(redact(&ours), redact(&sample(file)["attachment"]), "{file}");
    }
    let list = h.get("/attachments", ADMIN, "3.27").await.body;
    assert_eq!(
        redact(&list["attachments"][0]),
        redact(&sample("attachment-list-response.json")["attachments"][0])
    );
    let detail = h.get("/attachments/detail", ADMIN, "3.27").await.body;
    let theirs = sample("attachment-list-detailed-response.json");
    assert_eq!(redact(&detail["attachments"][0]), redact(&theirs["attachments"][0]));
    h.cleanup().await;
}

/// Five attachments of `p1` on two volumes, a second apart, and one of `p2`.
async fn seed(h: &Harness) -> (String, Vec<String>) {
    let v1 = h.create_volume(ADMIN, json!({"size": 1})).await;
    let v2 = h.create_volume(ADMIN, json!({"size": 1})).await;
    let v3 = h.create_volume("u:p2", json!({"size": 1})).await;
    let start = Utc::now() - Duration::minutes(10);
    let mut ids = Vec::new();
    for i in 0..6 {
        let (vol, project) = match i {
            0 | 2 | 4 => (&v1, "p1"),
            5 => (&v3, "p2"),
            _ => (&v2, "p1"),
        };
        let id = uuid::Uuid::new_v4().to_string();
        let mut row = VolumeAttachment::reserved(&id, vol.as_str(), project, Some(format!("server-{i}")));
        row.created_at = start + Duration::seconds(i);
        if i == 4 {
            row.attach_status = AttachStatus::Attached;
        }
        h.repo.create_attachment(&row).await.unwrap();
        ids.push(id);
    }
    (v1, ids)
}

fn ids_of(a: &Answer) -> Vec<String> {
    a.body["attachments"].as_array().unwrap().iter().map(|x| x["id"].as_str().unwrap().to_owned()).collect()
}

#[tokio::test]
async fn lists_filter_sort_and_page_on_every_database() {
    for h in Harness::all().await {
        let (v1, ids) = seed(&h).await;
        let newest_first: Vec<String> = ids[..5].iter().rev().cloned().collect();
        assert_eq!(ids_of(&h.get("/attachments", ADMIN, "3.27").await), newest_first, "created_at desc");

        let mut seen = Vec::new();
        let mut path = "/attachments/detail?limit=2&sort=created_at:asc".to_owned();
        for _ in 0..10 {
            let a = h.get(&path, ADMIN, "3.27").await;
            assert_eq!(a.status, StatusCode::OK, "{:?}", a.body);
            seen.extend(ids_of(&a));
            let Some(next) = a.body["attachments_links"][0]["href"].as_str() else { break };
            path = next.strip_prefix("http://ember.test:8776/v3/p1").unwrap().to_owned();
            assert!(path.starts_with("/attachments/detail?") && path.contains("limit=2"), "{path}");
        }
        assert_eq!(seen, ids[..5], "every page once, in order");

        assert_eq!(
            ids_of(&h.get(&format!("/attachments?volume_id={v1}&sort=created_at:asc"), ADMIN, "3.27").await),
            [ids[0].clone(), ids[2].clone(), ids[4].clone()]
        );
        assert_eq!(
            ids_of(&h.get("/attachments?instance_id=server-3", ADMIN, "3.27").await),
            [ids[3].clone()]
        );
        assert_eq!(ids_of(&h.get("/attachments?status=attached", ADMIN, "3.27").await), [ids[4].clone()]);
        assert_eq!(
            ids_of(&h.get("/attachments?attach_status=attached", ADMIN, "3.27").await),
            [ids[4].clone()]
        );
        assert!(ids_of(&h.get("/attachments?status=sideways", ADMIN, "3.27").await).is_empty());
        assert_eq!(ids_of(&h.get("/attachments?all_tenants=1", ADMIN, "3.27").await).len(), 6);
        assert_eq!(ids_of(&h.get("/attachments", "u:p2", "3.27").await), [ids[5].clone()]);
        assert_eq!(
            ids_of(&h.get("/attachments?offset=4&sort=created_at:asc", ADMIN, "3.27").await),
            [ids[4].clone()]
        );
        assert_eq!(
            ids_of(&h.get("/attachments?colour=red", ADMIN, "3.30").await).len(),
            5,
            "ignored before 3.31"
        );
        for bad in ["colour=red", "sort=name:asc", "sort=created_at:up", "limit=x", "offset=-1"] {
            h.get(&format!("/attachments?{bad}"), ADMIN, "3.31").await.fault(400, "badRequest");
        }
        let unknown = uuid::Uuid::new_v4();
        h.get(&format!("/attachments?marker={unknown}"), ADMIN, "3.27").await.fault(404, "itemNotFound");
        h.cleanup().await;
    }
}

#[tokio::test]
async fn project_less_urls_reach_attachments_from_3_67() {
    let h = Harness::sqlite().await;
    let vol = available_volume(&h, ADMIN).await;
    let a = h.call_url(Method::POST, "/v3/attachments", ADMIN, "3.67", Some(create_body(&vol))).await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.body);
    let id = a.body["attachment"]["id"].as_str().unwrap().to_owned();
    let list = h.call_url(Method::GET, "/v3/attachments?limit=1", ADMIN, "3.67", None).await;
    assert_eq!(list.body["attachments"][0]["id"], id.as_str());
    let next = list.body["attachments_links"][0]["href"].as_str().unwrap();
    assert!(next.starts_with("http://ember.test:8776/v3/attachments?"), "{next}");
    let shown = h.call_url(Method::GET, &format!("/v3/attachments/{id}"), ADMIN, "3.67", None).await;
    assert_eq!(shown.status, StatusCode::OK);
    h.call_url(Method::GET, "/v3/attachments/detail", ADMIN, "3.66", None).await.fault(400, "badRequest");
    h.cleanup().await;
}
