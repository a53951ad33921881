//! Leases and recovery: a live workflow is never handed to a second owner, an expired one is
//! handed to exactly one, and recovery gives up after `workflow.max_recovery_attempts`.

use std::collections::HashSet;
use std::time::Duration;
use uuid::Uuid;
use workflow_tests::{eventually, shared_cluster, unique};

const DEADLINE: Duration = Duration::from_secs(20);

/// Starts `count` workflows of `name` with a lease of one second, and waits until every
/// lease has expired.
async fn start_expiring(name: &str, count: i32) -> Vec<Uuid> {
    let client = shared_cluster().connect().await;
    client
        .batch_execute("SET workflow.lease_duration = '1s'")
        .await
        .unwrap();
    let ids: Vec<Uuid> = client
        .query(
            "SELECT wf_start($1) FROM generate_series(1, $2)",
            &[&name, &count],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    eventually("leases to expire", DEADLINE, || async {
        let expired: bool = client
            .query_one(
                "SELECT bool_and(lease_expires_at <= statement_timestamp()) FROM workflow.runs WHERE name = $1",
                &[&name],
            )
            .await
            .unwrap()
            .get(0);
        expired.then_some(())
    })
    .await;
    ids
}

async fn claim(client: &tokio_postgres::Client, name: &str, owner: &str, max: i32) -> Vec<Uuid> {
    client
        .query(
            "SELECT wf_claim($1, $2, interval '1 hour', $3)",
            &[&name, &owner, &max],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect()
}

#[tokio::test]
async fn a_freshly_started_workflow_is_not_claimable_by_others_while_its_lease_runs() {
    let cluster = shared_cluster();
    let name = unique("fresh");
    let starter = cluster.connect().await;
    let other = cluster.connect().await;

    // Uncommitted: invisible, so certainly not claimable.
    starter.batch_execute("BEGIN").await.unwrap();
    let id = workflow_tests::start_workflow(&starter, &name).await;
    assert!(claim(&other, &name, "other", 10).await.is_empty());
    starter.batch_execute("COMMIT").await.unwrap();

    // Committed, with its 60 s default lease running: still not claimable.
    assert!(claim(&other, &name, "other", 10).await.is_empty());
    let owner: String = other
        .query_one("SELECT owner FROM wf_status($1)", &[&id])
        .await
        .unwrap()
        .get(0);
    assert!(
        owner.starts_with("postgres:"),
        "leased to the starter's session, got {owner}"
    );
}

#[tokio::test]
async fn an_expired_lease_is_reclaimable_and_counts_a_recovery_attempt() {
    let cluster = shared_cluster();
    let name = unique("expired");
    let ids = start_expiring(&name, 1).await;
    let rescuer = cluster.connect().await;

    assert_eq!(claim(&rescuer, &name, "rescuer", 1).await, ids);
    let row = rescuer
        .query_one(
            "SELECT owner, recovery_attempts, lease_expires_at > now() FROM wf_status($1)",
            &[&ids[0]],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "rescuer");
    assert_eq!(row.get::<_, i32>(1), 1);
    assert!(row.get::<_, bool>(2), "the rescuer holds a fresh lease");
    assert!(
        claim(&rescuer, &name, "third", 1).await.is_empty(),
        "not handed out twice"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn four_owners_claiming_concurrently_never_share_a_workflow() {
    const WORKFLOWS: i32 = 60;
    let cluster = shared_cluster();
    let name = unique("shared-recovery");
    let ids: HashSet<Uuid> = start_expiring(&name, WORKFLOWS).await.into_iter().collect();

    let mut owners = Vec::new();
    for owner in 0..4 {
        let client = cluster.connect().await;
        let name = name.clone();
        owners.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let batch = claim(&client, &name, &format!("owner-{owner}"), 3).await;
                if batch.is_empty() {
                    return mine;
                }
                mine.extend(batch);
            }
        }));
    }
    let mut seen = HashSet::new();
    for owner in owners {
        for id in owner.await.unwrap() {
            assert!(seen.insert(id), "workflow {id} was handed to two owners");
        }
    }
    assert_eq!(
        seen, ids,
        "every expired workflow is recovered exactly once"
    );
}

#[tokio::test]
async fn past_the_recovery_cap_the_workflow_is_failed_instead_of_claimed() {
    let cluster = shared_cluster();
    let name = unique("cap");
    let ids = start_expiring(&name, 1).await;
    let id = ids[0];
    let claimer = cluster.connect().await;
    claimer
        .batch_execute("SET workflow.max_recovery_attempts = 2")
        .await
        .unwrap();

    for attempt in 1..=3 {
        // Each recovery holds a tiny lease, which must expire before the next claim.
        let handed = eventually("the lease to expire", DEADLINE, || async {
            let rows = claimer
                .query(
                    "SELECT wf_claim($1, 'crashy', interval '10 milliseconds')",
                    &[&name],
                )
                .await
                .unwrap();
            let status: String = claimer
                .query_one("SELECT status FROM wf_status($1)", &[&id])
                .await
                .unwrap()
                .get(0);
            (!rows.is_empty() || status == "failed").then_some(rows.len())
        })
        .await;
        assert_eq!(
            handed,
            if attempt <= 2 { 1 } else { 0 },
            "attempt {attempt}"
        );
    }
    let row = claimer
        .query_one(
            "SELECT status, recovery_attempts, error FROM wf_status($1)",
            &[&id],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "failed");
    assert_eq!(row.get::<_, i32>(1), 3);
    assert!(
        row.get::<_, String>(2)
            .contains("max_recovery_attempts is 2")
    );
}
