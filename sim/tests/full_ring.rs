//! A scripted scenario for the full-ring deadlock in a cluster: one replica wins election after
//! election but its appends never reach anyone, so each term leaves one more uncommitted no-op
//! in its WAL ring until the ring is full. Without a way out it could never lead again (no slot
//! for its no-op, so nothing commits, so no checkpoint frees a slot), and since its log is the
//! most up to date, nobody else could either. The way out (`make_room_for_noop`): the heads the
//! other replicas report with their votes prove the no-ops are on no quorum, so it discards them.

mod common;

use common::Cluster;
use ziggy_core::marks::Mark;
use ziggy_core::message::{Command, Header};
use ziggy_core::replica::Role;
use ziggy_core::wal::batch::RequestId;
use ziggy_core::wal::header::Operation;
use ziggy_core::Config;

#[test]
fn a_candidate_with_a_ring_full_of_its_own_uncommitted_noops_leads_again() {
    let mut cluster = Cluster::new();
    // Register a client and commit a few puts.
    let client = 42;
    let register = RequestId {
        client,
        session: 0,
        request: 0,
    };
    let session = cluster.call(register, Operation::REGISTER, &[]);
    cluster.write(client, session, 1, 5);
    let committed = cluster.nodes[0].replica.applied();

    // Replica 0 alone may campaign (the others' pre-votes and votes are lost), and nothing it
    // appends as leader reaches anyone: every term it wins leaves an uncommitted no-op behind.
    let slots = Config::test().wal_slot_count;
    let isolated = |from: u8, header: &Header| {
        (from != 0 && matches!(header.command, Command::PreVote | Command::Vote))
            || matches!(
                header.command,
                Command::Append | Command::SyncOffer | Command::Block
            )
    };
    let mut ticks = 0;
    while cluster.nodes[0]
        .replica
        .marks()
        .count(Mark::FullRingNoopSlot)
        == 0
    {
        cluster.step(&isolated);
        ticks += 1;
        assert!(
            ticks < 200 * slots * 10,
            "replica 0 never made a slot for its no-op in its full ring: head {} applied {}",
            cluster.nodes[0].replica.log_head(),
            cluster.nodes[0].replica.applied()
        );
    }
    let replica = &cluster.nodes[0].replica;
    assert!(
        replica.log_head() <= committed + 1,
        "the candidate discarded the no-ops no quorum holds (head {}, committed {committed})",
        replica.log_head()
    );
    assert_eq!(
        replica.role(),
        Role::Leader,
        "and led with a slot for its no-op"
    );

    // Healed, the cluster commits again, and every replica keeps every committed put.
    cluster.write(client, session, 6, 3);
    for node in &mut cluster.nodes {
        assert!(node.replica.applied() > committed);
        let (state, _) = node.replica.state().expect("ready");
        for request in 1..9u64 {
            let key = format!("k{request}");
            assert_eq!(
                state.get(key.as_bytes()).unwrap(),
                Some(b"v".to_vec()),
                "{key} on replica {}",
                node.replica.id()
            );
        }
    }
}
