//! `$batch` retries: throttled items of every envelope wait out their
//! `Retry-After` and go out again packed into full envelopes, answers in the
//! order asked, each item's attempts kept, nothing sent twice after a success.

use fake_entra::{Fault, User};
use serde_json::Value;

use crate::common::*;

#[tokio::test(flavor = "multi_thread")]
async fn throttled_items_of_all_envelopes_are_repacked_into_full_ones() {
    use entra_remediator::graph::{GraphClient, GraphRequest};

    let (fake, ws) = enforce_setup("", "").await;
    for n in 0..40 {
        fake.add_user(User {
            id: guid(n),
            user_principal_name: format!("u{n}@t.com"),
            display_name: format!("u{n}"),
            user_type: "Member".into(),
            account_enabled: true,
        });
    }
    let cfg = entra_remediator::config::Config::load(&ws.config_path()).unwrap();
    let tenant = &cfg.tenants[0];
    let graph = GraphClient::new(&tenant.tenant_id, tenant.graph.as_ref().unwrap()).unwrap();
    fake.clear_requests();
    fake.inject(Fault::Throttle {
        matching: "GET /v1.0/users/".into(),
        count: 25,
        retry_after: Some(1.0),
    });
    let reqs: Vec<GraphRequest> = (0..40)
        .map(|n| GraphRequest::get(format!("/users/{}?$select=id", guid(n))))
        .collect();
    let answers = graph.batch(reqs).await;

    // Every answer, in the order asked; 25 items were throttled once, then answered.
    assert_eq!(answers.len(), 40);
    let mut twice = 0;
    for (n, a) in answers.iter().enumerate() {
        let r = a.as_ref().unwrap();
        assert_eq!(r.status, 200, "{n}: {:?}", r.body);
        assert_eq!(r.body["id"], guid(n as u32), "answer {n} out of order");
        let statuses: Vec<u16> = r.attempts.iter().map(|a| a.status).collect();
        assert!(
            r.attempts
                .iter()
                .all(|a| a.batched && a.batch_request_id.is_some())
        );
        match statuses.as_slice() {
            [200] => {}
            [429, 200] => twice += 1,
            other => panic!("{n}: attempts {other:?}"),
        }
    }
    assert_eq!(twice, 25);

    // Round 1: two full envelopes; round 2: the 25 throttled items of both,
    // re-packed into one full envelope and one of 5 (not per-envelope remnants).
    let recorded = fake.requests();
    let mut sizes: Vec<usize> = recorded
        .iter()
        .filter(|r| r.path.ends_with("/$batch"))
        .map(|r| {
            r.body
                .as_ref()
                .and_then(|b| b.get("requests"))
                .and_then(Value::as_array)
                .map_or(0, Vec::len)
        })
        .collect();
    assert_eq!(sizes.len(), 4, "{sizes:?}");
    assert_eq!(&sizes[..2], &[20, 20]);
    sizes[2..].sort_unstable();
    assert_eq!(&sizes[2..], &[5, 20]);
    let items: Vec<_> = recorded.iter().filter(|r| r.in_batch).collect();
    assert_eq!(items.len(), 65);
    assert_eq!(items.iter().filter(|r| r.status == 429).count(), 25);
    // Nothing sent twice after a success.
    for n in 0..40 {
        let ok = items
            .iter()
            .filter(|r| r.status == 200 && r.path == format!("/v1.0/users/{}", guid(n)))
            .count();
        assert_eq!(ok, 1, "user {n} read {ok} times");
    }
}
