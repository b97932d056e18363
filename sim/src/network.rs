//! The simulated network: packets between nodes (replicas and clients) with delay, loss,
//! duplication, reordering, bounded queues and partitions that form and heal.
//!
//! Per packet: dropped with probability `drop`; otherwise delayed by `delay_min` plus an
//! exponential-ish random share of `delay_mean` (so packets overtake each other: reordering for
//! free); duplicated with probability `duplicate` (the copy gets its own delay). Each link holds
//! at most `queue_max` packets; a full link drops a random queued packet. Partitions: each tick, a
//! partition may form (a random split of the replicas, symmetric or one-way, or one replica
//! isolated) and a formed partition may heal. [`SimNetwork::heal`] ends every fault, for the
//! liveness phase.

use crate::prng::{Ppm, Prng};
use std::collections::BTreeSet;

pub type NodeId = u8;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetworkOptions {
    pub drop: Ppm,
    pub duplicate: Ppm,
    pub delay_min: u64,
    pub delay_mean: u64,
    pub queue_max: usize,
    /// Per tick, without a partition: the chance that one forms.
    pub partition: Ppm,
    /// Per tick, with a partition: the chance that it heals.
    pub heal: Ppm,
    /// Of partitions: the chance that one is one-way (A hears B, B does not hear A).
    pub one_way: Ppm,
    /// Per packet: the chance of a delay spike of up to `spike_max` ticks (longer than an
    /// election timeout: the packet arrives terms late).
    pub spike: Ppm,
    pub spike_max: u64,
    /// Per packet: the chance that a bit of it flips on the way.
    pub corrupt: Ppm,
    /// Per tick, while no client is cut off: the chance that a client loses its links to some
    /// replicas (healed with `heal`).
    pub client_cut: Ppm,
}

impl NetworkOptions {
    pub fn perfect() -> NetworkOptions {
        NetworkOptions {
            drop: Ppm::NEVER,
            duplicate: Ppm::NEVER,
            delay_min: 1,
            delay_mean: 1,
            queue_max: 1024,
            partition: Ppm::NEVER,
            heal: Ppm::ALWAYS,
            one_way: Ppm::NEVER,
            spike: Ppm::NEVER,
            spike_max: 1,
            corrupt: Ppm::NEVER,
            client_cut: Ppm::NEVER,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Packet {
    pub from: NodeId,
    pub to: NodeId,
    pub data: Vec<u8>,
}

#[derive(Clone, Debug)]
struct InFlight {
    due: u64,
    seq: u64,
    packet: Packet,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetworkStats {
    pub sent: u64,
    pub delivered: u64,
    pub dropped: u64,
    pub duplicated: u64,
    pub partitioned: u64,
    pub overflowed: u64,
    pub partitions: u64,
    pub spikes: u64,
    pub corrupted: u64,
    pub client_cuts: u64,
}

pub struct SimNetwork {
    /// Replicas are nodes `0..replicas`; clients follow. Partitions split replicas only.
    replicas: u8,
    nodes: u8,
    options: NetworkOptions,
    faults: bool,
    prng: Prng,
    in_flight: Vec<InFlight>,
    /// Directed links that are cut: (from, to).
    cut: BTreeSet<(NodeId, NodeId)>,
    /// Links between a client and replicas that are cut, both ways: (client, replica).
    client_cut: BTreeSet<(NodeId, NodeId)>,
    seq: u64,
    pub stats: NetworkStats,
}

impl SimNetwork {
    pub fn new(replicas: u8, clients: u8, options: NetworkOptions, prng: Prng) -> SimNetwork {
        SimNetwork {
            replicas,
            nodes: replicas + clients,
            options,
            faults: true,
            prng,
            in_flight: Vec::new(),
            cut: BTreeSet::new(),
            client_cut: BTreeSet::new(),
            seq: 0,
            stats: NetworkStats::default(),
        }
    }

    pub fn options(&self) -> &NetworkOptions {
        &self.options
    }

    /// Whether `from` can currently reach `to`.
    pub fn connected(&self, from: NodeId, to: NodeId) -> bool {
        let (client, replica) = if from < to { (to, from) } else { (from, to) };
        !self.cut.contains(&(from, to)) && !self.client_cut.contains(&(client, replica))
    }

    pub fn partitioned(&self) -> bool {
        !self.cut.is_empty()
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Ends every fault: heals partitions, and stops loss and duplication. Delay stays.
    pub fn heal(&mut self) {
        self.faults = false;
        self.cut.clear();
        self.client_cut.clear();
    }

    /// Loss, duplication and partitions may happen again (the end of a calm fill).
    pub fn resume_faults(&mut self) {
        self.faults = true;
    }

    pub fn send(&mut self, now: u64, from: NodeId, to: NodeId, data: &[u8]) {
        assert!(
            from < self.nodes && to < self.nodes && from != to,
            "bad link {from}->{to}"
        );
        self.stats.sent += 1;
        if self.faults && self.prng.chance(self.options.drop) {
            self.stats.dropped += 1;
            return;
        }
        let copies = if self.faults && self.prng.chance(self.options.duplicate) {
            self.stats.duplicated += 1;
            2
        } else {
            1
        };
        for _ in 0..copies {
            let mut data = data.to_vec();
            if self.faults && !data.is_empty() && self.prng.chance(self.options.corrupt) {
                self.stats.corrupted += 1;
                let bit = self.prng.range(0, data.len() as u64 * 8 - 1);
                data[(bit / 8) as usize] ^= 1 << (bit % 8);
            }
            self.enqueue(now, Packet { from, to, data });
        }
    }

    fn enqueue(&mut self, now: u64, packet: Packet) {
        let queued = self
            .in_flight
            .iter()
            .filter(|p| p.packet.from == packet.from && p.packet.to == packet.to)
            .count();
        if queued >= self.options.queue_max {
            // A full link drops a random packet already queued on it.
            let on_link: Vec<usize> = (0..self.in_flight.len())
                .filter(|&i| {
                    self.in_flight[i].packet.from == packet.from
                        && self.in_flight[i].packet.to == packet.to
                })
                .collect();
            let victim = on_link[self.prng.index(on_link.len())];
            self.in_flight.remove(victim);
            self.stats.overflowed += 1;
        }
        self.seq += 1;
        let due = now + self.delay();
        self.in_flight.push(InFlight {
            due,
            seq: self.seq,
            packet,
        });
    }

    /// `delay_min` plus a roughly exponential share of `delay_mean`: mostly short, sometimes long.
    fn delay(&mut self) -> u64 {
        if self.faults && self.prng.chance(self.options.spike) {
            self.stats.spikes += 1;
            return self.options.delay_min + self.prng.range(0, self.options.spike_max);
        }
        let mean = self.options.delay_mean.max(1);
        let mut extra = 0;
        // Geometric with success probability 1/mean: mean ~= mean, integer arithmetic only.
        while extra < mean * 8 && self.prng.range(0, mean - 1) != 0 {
            extra += 1;
        }
        self.options.delay_min + extra
    }

    /// Advances the partition state by one tick.
    pub fn tick(&mut self) {
        if !self.faults {
            return;
        }
        self.tick_client_cuts();
        if self.replicas < 2 {
            return;
        }
        if self.cut.is_empty() {
            if self.prng.chance(self.options.partition) {
                self.form_partition();
            }
        } else if self.prng.chance(self.options.heal) {
            self.cut.clear();
        }
    }

    /// A client loses its links to a random nonempty set of replicas (all of them, at times),
    /// or gets them back.
    fn tick_client_cuts(&mut self) {
        if !self.client_cut.is_empty() {
            if self.prng.chance(self.options.heal) {
                self.client_cut.clear();
            }
            return;
        }
        if self.nodes == self.replicas || !self.prng.chance(self.options.client_cut) {
            return;
        }
        self.stats.client_cuts += 1;
        let client = self.replicas + self.prng.index((self.nodes - self.replicas) as usize) as u8;
        let keep = self.prng.index(self.replicas as usize) as u8;
        for replica in 0..self.replicas {
            if replica != keep || self.prng.bool() {
                self.client_cut.insert((client, replica));
            }
        }
    }

    fn form_partition(&mut self) {
        self.stats.partitions += 1;
        let replicas: Vec<NodeId> = (0..self.replicas).collect();
        // One side: either one isolated replica or a random nonempty proper subset.
        let side: BTreeSet<NodeId> = if self.prng.bool() {
            [replicas[self.prng.index(replicas.len())]].into()
        } else {
            loop {
                let s: BTreeSet<NodeId> = replicas
                    .iter()
                    .copied()
                    .filter(|_| self.prng.bool())
                    .collect();
                if !s.is_empty() && s.len() < replicas.len() {
                    break s;
                }
            }
        };
        let one_way = self.prng.chance(self.options.one_way);
        for &a in &side {
            for &b in replicas.iter().filter(|r| !side.contains(r)) {
                self.cut.insert((a, b));
                if !one_way {
                    self.cut.insert((b, a));
                }
            }
        }
    }

    /// The packets due by `now`, in delivery order. Packets on a cut link are dropped on arrival.
    pub fn deliver(&mut self, now: u64) -> Vec<Packet> {
        let mut due = Vec::new();
        let mut keep = Vec::with_capacity(self.in_flight.len());
        for p in self.in_flight.drain(..) {
            if p.due <= now {
                due.push(p);
            } else {
                keep.push(p);
            }
        }
        self.in_flight = keep;
        due.sort_by_key(|p| (p.due, p.seq));
        let mut out = Vec::with_capacity(due.len());
        for p in due {
            if !self.connected(p.packet.from, p.packet.to) {
                self.stats.partitioned += 1;
                continue;
            }
            self.stats.delivered += 1;
            out.push(p.packet);
        }
        out
    }

    /// Drops every packet to or from `node` (it crashed: its sockets are gone).
    pub fn forget(&mut self, node: NodeId) {
        self.in_flight.retain(|p| p.packet.to != node);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(options: NetworkOptions) -> SimNetwork {
        SimNetwork::new(3, 1, options, Prng::new(5))
    }

    #[test]
    fn perfect_network_delivers_everything_once() {
        let mut n = net(NetworkOptions::perfect());
        for i in 0..50u8 {
            n.send(0, i % 3, 3, &[i]);
        }
        let mut got: Vec<u8> = (0..20)
            .flat_map(|t| n.deliver(t))
            .map(|p| p.data[0])
            .collect();
        got.sort();
        assert_eq!(got, (0..50).collect::<Vec<u8>>());
    }

    #[test]
    fn delays_reorder_and_duplicates_arrive() {
        let mut options = NetworkOptions::perfect();
        options.delay_mean = 20;
        options.duplicate = Ppm::percent(50);
        let mut n = net(options);
        for i in 0..200u8 {
            n.send(0, 0, 1, &[i]);
        }
        let got: Vec<u8> = (0..1000)
            .flat_map(|t| n.deliver(t))
            .map(|p| p.data[0])
            .collect();
        assert!(got.len() > 200, "duplicates arrive");
        assert!(
            got.windows(2).any(|w| w[0] > w[1]),
            "packets overtake each other"
        );
    }

    #[test]
    fn partitions_cut_links_and_heal() {
        let mut options = NetworkOptions::perfect();
        options.partition = Ppm::ALWAYS;
        options.heal = Ppm::NEVER;
        let mut n = net(options);
        n.tick();
        assert!(n.partitioned());
        let cut: Vec<(u8, u8)> = (0..3)
            .flat_map(|a| (0..3).map(move |b| (a, b)))
            .filter(|&(a, b)| a != b && !n.connected(a, b))
            .collect();
        assert!(!cut.is_empty());
        let (a, b) = cut[0];
        n.send(0, a, b, b"x");
        assert!(n.deliver(10).is_empty());
        n.heal();
        n.send(10, a, b, b"y");
        assert_eq!(n.deliver(20).len(), 1);
        assert!(n.connected(a, b));
    }

    #[test]
    fn corrupted_and_late_packets_arrive() {
        let mut options = NetworkOptions::perfect();
        options.corrupt = Ppm::ALWAYS;
        options.spike = Ppm::ALWAYS;
        options.spike_max = 500;
        let mut n = net(options);
        for _ in 0..20 {
            n.send(0, 0, 1, &[0u8; 8]);
        }
        let got: Vec<Packet> = (0..=501).flat_map(|t| n.deliver(t)).collect();
        assert_eq!(got.len(), 20);
        assert!(got
            .iter()
            .all(|p| p.data.iter().map(|b| b.count_ones()).sum::<u32>() == 1));
        assert_eq!(n.stats.spikes, 20);
    }

    #[test]
    fn clients_lose_links_to_replicas() {
        let mut options = NetworkOptions::perfect();
        options.client_cut = Ppm::ALWAYS;
        options.heal = Ppm::NEVER;
        let mut n = net(options);
        n.tick();
        let cut: Vec<u8> = (0..3).filter(|&r| !n.connected(3, r)).collect();
        assert!(!cut.is_empty());
        assert!(cut.iter().all(|&r| !n.connected(r, 3)), "both ways");
        assert!(
            n.connected(0, 1) && n.connected(1, 2),
            "replicas still talk"
        );
        n.heal();
        assert!((0..3).all(|r| n.connected(3, r)));
    }

    #[test]
    fn same_seed_same_deliveries() {
        let run = || {
            let mut options = NetworkOptions::perfect();
            options.drop = Ppm::percent(20);
            options.delay_mean = 7;
            let mut n = net(options);
            for i in 0..100u8 {
                n.send(i as u64, i % 3, (i + 1) % 3, &[i]);
            }
            (0..2000).flat_map(|t| n.deliver(t)).collect::<Vec<_>>()
        };
        assert_eq!(run(), run());
    }
}
