//! Scripted scenarios for hole inquiries (`core/src/replica/hole.rs`) in a two-replica cluster,
//! where every election needs both votes: a replica's head entry rots together with its
//! redundant header (decision-table row 12), so its term is unknown and the replica may neither
//! vote nor campaign. No leader can be elected to repair it; asking the peer settles the hole
//! (the peer's copy fills it, or the peer's log proves it was never committed, and it is cut),
//! and the cluster goes on.

mod common;

use common::Cluster;
use ziggy_core::marks::Mark;
use ziggy_core::wal::batch::RequestId;
use ziggy_core::{Config, KvStateMachine, Layout, Zone};

/// Overwrites both copies of entry `index` on replica `r` with garbage: its slot's first sector
/// and the sector of the headers ring that holds its redundant header.
fn rot_entry_and_header(cluster: &mut Cluster, r: usize, index: u64) {
    let layout = Layout::new(&Config::test());
    let slot = layout.slot_of(index);
    let sector = layout.sector_size as usize;
    let garbage: Vec<u8> = (0..sector).map(|i| (i * 151 + 7) as u8).collect();
    let storage = &mut cluster.nodes[r].storage;
    storage.write_durable(layout.entry_offset(slot), &garbage);
    let header = layout.header_sector_offset(layout.header_sector_of(slot));
    assert!(header >= layout.zone_start(Zone::WalHeaders));
    storage.write_durable(header, &garbage);
}

#[test]
fn a_replica_whose_head_rotted_with_its_header_asks_its_peer_and_the_cluster_goes_on() {
    let mut cluster = Cluster::with_replicas(2);
    let client = 7;
    let session = cluster.register(client);
    cluster.write(client, session, 1, 4);
    let head = cluster.nodes[1].replica.log_head();
    assert_eq!(head, cluster.nodes[0].replica.log_head());

    // Replica 1's head rots in both copies; both restart, so a new leader must be elected.
    let down = |_: u8, _: &ziggy_core::message::Header| false; // nothing lost
    rot_entry_and_header(&mut cluster, 1, head);
    cluster.restart(0);
    cluster.restart(1);
    for _ in 0..20 {
        cluster.step(&down);
    }
    assert_eq!(
        cluster.nodes[1].replica.marks().count(Mark::RecoveryFaulty),
        1,
        "replica 1 recovered its head as faulty (row 12)"
    );

    let mut ticks = 0;
    while cluster.leader().is_none() {
        cluster.step(&down);
        ticks += 1;
        assert!(
            ticks < 20_000,
            "no leader: replica 1 can neither vote nor campaign with its head lost"
        );
    }
    let replica = &cluster.nodes[1].replica;
    assert_eq!(
        replica.marks().count(Mark::HoleInquiryRepair),
        1,
        "replica 1 filled its hole with replica 0's copy"
    );

    // The cluster takes writes again, and both survivors hold every committed put.
    let mut request = 5;
    while cluster.nodes.iter().any(|n| n.replica.applied() <= head) {
        let id = RequestId {
            client,
            session,
            request,
        };
        let body = KvStateMachine::put_body(format!("k{request}").as_bytes(), b"v");
        let leader = cluster.leader().expect("a leader");
        let node = &mut cluster.nodes[leader];
        node.replica
            .submit(&mut node.storage, id, KvStateMachine::PUT, &body);
        for _ in 0..200 {
            cluster.step(&down);
        }
        request += 1;
        assert!(request < 50, "the survivors commit again");
    }
    for node in cluster.nodes.iter_mut() {
        let (state, _) = node.replica.state().expect("ready");
        for k in 1..5u64 {
            assert_eq!(
                state.get(format!("k{k}").as_bytes()).unwrap(),
                Some(b"v".to_vec()),
                "k{k} on replica {}",
                node.replica.id()
            );
        }
    }
}

#[test]
fn a_replica_whose_lost_head_its_peer_never_had_cuts_it_and_the_cluster_goes_on() {
    let mut cluster = Cluster::with_replicas(2);
    let client = 9;
    let session = cluster.register(client);
    cluster.write(client, session, 1, 4);
    let committed = cluster.nodes[0].replica.log_head();

    // The leader appends one more entry that never reaches its follower, then loses it with its
    // redundant header: the follower's log proves it was never committed.
    let leader = cluster.leader().expect("a leader");
    let follower = 1 - leader;
    let isolated = |from: u8, _: &ziggy_core::message::Header| from as usize == leader;
    let id = RequestId {
        client,
        session,
        request: 5,
    };
    let body = KvStateMachine::put_body(b"k5", b"lost");
    let node = &mut cluster.nodes[leader];
    node.replica
        .submit(&mut node.storage, id, KvStateMachine::PUT, &body);
    let mut ticks = 0;
    while cluster.nodes[leader].replica.durable_index() <= committed {
        cluster.step(&isolated);
        ticks += 1;
        assert!(ticks < 1_000, "the leader's entry became durable");
    }
    let lost = cluster.nodes[leader].replica.durable_index();
    assert_eq!(cluster.nodes[follower].replica.log_head(), committed);
    rot_entry_and_header(&mut cluster, leader, lost);
    cluster.restart(0);
    cluster.restart(1);

    let nothing_lost = |_: u8, _: &ziggy_core::message::Header| false;
    let mut ticks = 0;
    while cluster.leader().is_none() {
        cluster.step(&nothing_lost);
        ticks += 1;
        assert!(
            ticks < 20_000,
            "no leader: the replica that lost its head can neither vote nor campaign"
        );
    }
    assert_eq!(
        cluster.nodes[leader]
            .replica
            .marks()
            .count(Mark::HoleInquiryCut),
        1,
        "the old leader cut the entry its peer never had"
    );
    cluster.write(client, session, 6, 2);
    for node in cluster.nodes.iter_mut() {
        let (state, _) = node.replica.state().expect("ready");
        assert_eq!(
            state.get(b"k5").unwrap(),
            None,
            "never acknowledged, never applied"
        );
        for k in [1, 2, 3, 4, 6, 7u64] {
            assert_eq!(
                state.get(format!("k{k}").as_bytes()).unwrap(),
                Some(b"v".to_vec()),
                "k{k} on replica {}",
                node.replica.id()
            );
        }
    }
}
