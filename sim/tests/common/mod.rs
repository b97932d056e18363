//! A scripted cluster for tests that need to steer single messages: replicas over
//! disks without random faults and a one-tick network, with a filter on what is delivered.

#![allow(dead_code)] // each test file uses what it needs

use std::collections::VecDeque;

use ziggy_core::message::Header;
use ziggy_core::replica::Reply;
use ziggy_core::storage_contract::Completion;
use ziggy_core::wal::batch::RequestId;
use ziggy_core::wal::header::Operation;
use ziggy_core::{Config, KvStateMachine, Layout, Replica};
use ziggy_sim::prng::{Ppm, Prng};
use ziggy_sim::storage::{SimGrid, SimStorage, StorageFaults};

pub const CLUSTER: u64 = 0xC1C1;

pub struct Node {
    pub storage: SimStorage,
    pub grid: SimGrid,
    pub replica: Replica<KvStateMachine>,
}

/// Three replicas over perfect disks and a one-tick network, with a filter on what is delivered.
pub struct Cluster {
    pub nodes: Vec<Node>,
    pub in_flight: VecDeque<(u8, u8, Vec<u8>)>,
    pub replies: Vec<Reply>,
    pub tick: u64,
}

impl Cluster {
    pub fn new() -> Cluster {
        Cluster::with_replicas(3)
    }

    pub fn with_replicas(count: u8) -> Cluster {
        let config = Config::test();
        let layout = Layout::new(&config);
        let mut prng = Prng::new(7);
        let members = &[11, 13, 15, 17, 19][..count as usize];
        let nodes = (0..count)
            .map(|r| {
                let mut storage = SimStorage::new(layout, StorageFaults::none(), prng.fork());
                for (offset, bytes) in
                    Replica::<KvStateMachine>::format(&config, CLUSTER, r, members)
                {
                    storage.write_durable(offset, &bytes);
                }
                let grid = SimGrid::new(config.grid_block_size as usize, Ppm::NEVER, prng.fork());
                let mut replica =
                    Replica::new(config.clone(), prng.next_u64(), grid.handle()).unwrap();
                replica.open(&mut storage);
                Node {
                    storage,
                    grid,
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
    pub fn step(&mut self, drop: &dyn Fn(u8, &Header) -> bool) {
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

    /// Crashes replica `r` (writes in flight are lost or land) and opens it again.
    pub fn restart(&mut self, r: usize) {
        let node = &mut self.nodes[r];
        node.storage.crash();
        node.grid.crash(self.tick);
        let seed = 1000 + self.tick;
        node.replica = Replica::new(Config::test(), seed, node.grid.handle()).unwrap();
        node.replica.open(&mut node.storage);
    }

    pub fn leader(&self) -> Option<usize> {
        (0..self.nodes.len()).find(|&r| self.nodes[r].replica.accepting_requests())
    }

    /// Submits one request to the leader and returns the index it was applied at, once every
    /// replica applied it.
    pub fn call(&mut self, id: RequestId, operation: Operation, body: &[u8]) -> u64 {
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

    /// Registers `client` and returns its session.
    pub fn register(&mut self, client: u64) -> u64 {
        let id = RequestId {
            client,
            session: 0,
            request: 0,
        };
        self.call(id, Operation::REGISTER, &[])
    }

    /// Commits puts of keys `k{first}..` through the leader, one at a time.
    pub fn write(&mut self, client: u64, session: u64, first: u64, count: u64) {
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

    pub fn run_until(&mut self, done: impl Fn(&Cluster) -> bool, ticks: u64) -> Option<usize> {
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

pub fn drop_event(_: ziggy_core::Event) {}
