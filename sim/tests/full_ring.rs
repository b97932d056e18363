//! A scripted scenario for the full-ring deadlock in a cluster: one replica wins election after
//! election but its appends never reach anyone, so each term leaves one more uncommitted no-op
//! in its WAL ring until the ring is full. Without a way out it could never lead again (no slot
//! for its no-op, so nothing commits, so no checkpoint frees a slot), and since its log is the
//! most up to date, nobody else could either. The way out (`make_room_for_noop`): the heads the
//! other replicas report with their votes prove the no-ops are on no quorum, so it discards them.

use std::collections::VecDeque;

use ziggy_core::marks::Mark;
use ziggy_core::message::{Command, Header};
use ziggy_core::replica::Reply;
use ziggy_core::replica::Role;
use ziggy_core::storage_contract::Completion;
use ziggy_core::wal::batch::RequestId;
use ziggy_core::wal::header::Operation;
use ziggy_core::{Config, KvStateMachine, Layout, Replica};
use ziggy_sim::prng::{Ppm, Prng};
use ziggy_sim::storage::{SimGrid, SimStorage, StorageFaults};

const CLUSTER: u64 = 0xC1C1;

struct Node {
    storage: SimStorage,
    _grid: SimGrid,
    replica: Replica<KvStateMachine>,
}

/// Three replicas over perfect disks and a one-tick network, with a filter on what is delivered.
struct Cluster {
    nodes: Vec<Node>,
    in_flight: VecDeque<(u8, u8, Vec<u8>)>,
    replies: Vec<Reply>,
    tick: u64,
}

impl Cluster {
    fn new() -> Cluster {
        let config = Config::test();
        let layout = Layout::new(&config);
        let mut prng = Prng::new(7);
        let members = [11, 13, 15];
        let nodes = (0..3u8)
            .map(|r| {
                let mut storage = SimStorage::new(layout, StorageFaults::none(), prng.fork());
                for (offset, bytes) in
                    Replica::<KvStateMachine>::format(&config, CLUSTER, r, &members)
                {
                    storage.write_durable(offset, &bytes);
                }
                let grid = SimGrid::new(config.grid_block_size as usize, Ppm::NEVER, prng.fork());
                let mut replica =
                    Replica::new(config.clone(), prng.next_u64(), grid.handle()).unwrap();
                replica.open(&mut storage);
                Node {
                    storage,
                    _grid: grid,
                    replica,
                }
            })
            .collect();
        Cluster {
            nodes,
            in_flight: VecDeque::new(),
            replies: Vec::new(),
            tick: 0,
        }
    }

    /// One tick: IO completes, messages sent last tick arrive (unless `drop` says otherwise),
    /// clocks advance.
    fn step(&mut self, drop: &dyn Fn(u8, &Header) -> bool) {
        self.tick += 1;
        for node in &mut self.nodes {
            node.replica.prepare_flush(&mut node.storage);
            for completion in node.storage.advance(self.tick) {
                match completion {
                    Completion::Read { id, result } => {
                        let result = result.as_deref().map_err(|e| *e);
                        node.replica.on_read_complete(&mut node.storage, id, result)
                    }
                    Completion::Write { id, result } => {
                        node.replica
                            .on_write_complete(&mut node.storage, id, result)
                    }
                }
            }
        }
        for (from, to, bytes) in std::mem::take(&mut self.in_flight) {
            let header = Header::decode(&bytes, CLUSTER, to).expect("intact").0;
            if !drop(from, &header) {
                let node = &mut self.nodes[to as usize];
                node.replica.on_message(&mut node.storage, &bytes);
            }
        }
        for (r, node) in self.nodes.iter_mut().enumerate() {
            node.replica.tick(&mut node.storage);
            node.replica.drain_events().for_each(drop_event);
            let in_flight = &mut self.in_flight;
            node.replica
                .drain_messages(|to, bytes| in_flight.push_back((r as u8, to, bytes.to_vec())));
            self.replies.extend(node.replica.drain_replies());
        }
    }

    fn leader(&self) -> Option<usize> {
        (0..3).find(|&r| self.nodes[r].replica.accepting_requests())
    }

    /// Submits one request to the leader and returns the index it was applied at, once every
    /// replica applied it.
    fn call(&mut self, id: RequestId, operation: Operation, body: &[u8]) -> u64 {
        let leader = self
            .run_until(|c| c.leader().is_some(), 5_000)
            .expect("a leader");
        let node = &mut self.nodes[leader];
        node.replica.submit(&mut node.storage, id, operation, body);
        let answered = |c: &Cluster| {
            c.replies
                .iter()
                .any(|r| r.client == id.client && r.request == id.request && r.result.is_ok())
        };
        self.run_until(answered, 5_000).expect("answered");
        let index = self
            .replies
            .iter()
            .find(|r| r.client == id.client && r.request == id.request)
            .map(|r| r.index)
            .unwrap();
        self.run_until(
            |c| c.nodes.iter().all(|n| n.replica.applied() >= index),
            5_000,
        )
        .expect("applied everywhere");
        index
    }

    /// Commits puts of keys `k{first}..` through the leader, one at a time.
    fn write(&mut self, client: u64, session: u64, first: u64, count: u64) {
        for request in first..first + count {
            let id = RequestId {
                client,
                session,
                request,
            };
            let body = KvStateMachine::put_body(format!("k{request}").as_bytes(), b"v");
            self.call(id, KvStateMachine::PUT, &body);
        }
    }

    fn run_until(&mut self, done: impl Fn(&Cluster) -> bool, ticks: u64) -> Option<usize> {
        // (returns the leader, usize::MAX for none, once `done`)
        for _ in 0..ticks {
            if done(self) {
                return Some(self.leader().unwrap_or(usize::MAX));
            }
            self.step(&|_, _| false);
        }
        None
    }
}

fn drop_event(_: ziggy_core::Event) {}

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
