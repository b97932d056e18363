//! `ziggy inspect PATH [--verify]`: what a data file holds, read without opening it as a
//! replica (a running server's file can be inspected too): the superblock copies, the WAL's
//! two rings, the checkpoint, the grid's blocks by kind and the free space. `--verify` reads
//! every sector and block and checks every checksum, naming each bad one.

use std::fmt::Write as _;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use ziggy_core::checkpoint;
use ziggy_core::checksum::checksum;
use ziggy_core::lsm::grid::{BlockKind, HEADER_SIZE as BLOCK_HEADER};
use ziggy_core::superblock::{self, Superblock};
use ziggy_core::wal::header::{EntryHeader, HeaderError, HEADER_SIZE as ENTRY_HEADER};
use ziggy_core::{Config, Layout, Zone};

/// What `inspect` found.
pub struct Inspection {
    /// The report, as text.
    pub text: String,
    /// Damage `--verify` found, one line each (empty: none).
    pub damage: Vec<String>,
}

/// Reads `path` and describes it; with `verify`, checks every checksum. `progress` hears the
/// fraction of the grid read, now and then.
pub fn inspect(
    path: &Path,
    verify: bool,
    mut progress: impl FnMut(f64),
) -> std::io::Result<Inspection> {
    let file = File::open(path)?;
    let len = file.metadata()?.len();
    let (preset, layout, chosen, copies) = recognise(&file)?;
    let mut text = String::new();
    let mut damage = Vec::new();
    let _ = writeln!(
        text,
        "{}: {} bytes, layout of the {preset} preset",
        path.display(),
        len
    );
    for zone in Zone::ALL {
        let _ = writeln!(
            text,
            "  zone {:<15} at {:>12}, {:>12} bytes",
            zone.name(),
            layout.zone_start(zone),
            layout.zone_size(zone)
        );
    }
    describe_superblock(&mut text, &chosen, &copies, &mut damage);
    wal(&file, &layout, verify, &mut text, &mut damage)?;
    let _ = writeln!(
        text,
        "checkpoint: index {}, term {}, state {} bytes in area {}",
        chosen.checkpoint_index, chosen.checkpoint_term, chosen.state_size, chosen.state_area
    );
    grid(
        &file,
        &layout,
        &chosen,
        len,
        verify,
        &mut text,
        &mut damage,
        &mut progress,
    )?;
    let config = match preset {
        "test" => Config::test(),
        _ => Config::production(),
    };
    manifest(&file, &config, &chosen, &mut text)?;
    Ok(Inspection { text, damage })
}

/// The preset whose layout the file's superblock names, the chosen superblock and what each
/// copy decoded to.
#[allow(clippy::type_complexity)]
fn recognise(
    file: &File,
) -> std::io::Result<(
    &'static str,
    Layout,
    Superblock,
    Vec<Result<Superblock, String>>,
)> {
    for (preset, config) in [
        ("production", Config::production()),
        ("test", Config::test()),
    ] {
        let layout = Layout::new(&config);
        let mut zone = vec![0u8; layout.zone_size(Zone::Superblock) as usize];
        if file.read_exact_at(&mut zone, 0).is_err() {
            continue;
        }
        let Some(selection) = superblock::select(&layout, &zone) else {
            continue;
        };
        if selection.superblock.layout != config.layout_fingerprint() {
            continue;
        }
        let size = layout.superblock_copy_size as usize;
        let copies = (0..layout.superblock_copies as usize)
            .map(|c| {
                Superblock::decode(c as u16, &zone[c * size..(c + 1) * size])
                    .map_err(|e| format!("{e:?}"))
            })
            .collect();
        return Ok((preset, layout, selection.superblock, copies));
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        "not a ZiggyDB data file: no superblock copy decodes with a known layout",
    ))
}

fn describe_superblock(
    text: &mut String,
    chosen: &Superblock,
    copies: &[Result<Superblock, String>],
    damage: &mut Vec<String>,
) {
    let _ = writeln!(
        text,
        "superblock: sequence {}, cluster {}, replica {} of {}, term {}, incarnation {:#x}",
        chosen.sequence,
        chosen.cluster,
        chosen.replica,
        chosen.replica_count,
        chosen.term,
        chosen.incarnation
    );
    for (i, copy) in copies.iter().enumerate() {
        match copy {
            Ok(s) if s.sequence == chosen.sequence => {
                let _ = writeln!(text, "  copy {i}: sequence {} (current)", s.sequence);
            }
            Ok(s) => {
                let _ = writeln!(text, "  copy {i}: sequence {} (stale)", s.sequence);
            }
            Err(why) => {
                let _ = writeln!(text, "  copy {i}: does not decode ({why})");
                damage.push(format!("superblock copy {i}: {why}"));
            }
        }
    }
}

fn wal(
    file: &File,
    layout: &Layout,
    verify: bool,
    text: &mut String,
    damage: &mut Vec<String>,
) -> std::io::Result<()> {
    let mut ring = vec![0u8; layout.zone_size(Zone::WalHeaders) as usize];
    file.read_exact_at(&mut ring, layout.zone_start(Zone::WalHeaders))?;
    let (mut valid, mut blank, mut lowest, mut highest) = (0u64, 0u64, u64::MAX, 0u64);
    let mut headers = Vec::with_capacity(layout.wal_slot_count as usize);
    for slot in 0..layout.wal_slot_count as usize {
        let bytes = &ring[slot * ENTRY_HEADER..(slot + 1) * ENTRY_HEADER];
        match EntryHeader::decode(bytes) {
            Ok(h) => {
                valid += 1;
                if !h.is_hole() {
                    lowest = lowest.min(h.index);
                    highest = highest.max(h.index);
                }
                headers.push(Some(h));
            }
            Err(HeaderError::Blank) => {
                blank += 1;
                headers.push(None);
            }
            Err(e) => {
                damage.push(format!("wal header slot {slot}: {e:?}"));
                headers.push(None);
            }
        }
    }
    let range = if valid > 0 {
        format!("entries {lowest}..={highest}")
    } else {
        "empty".into()
    };
    let _ = writeln!(
        text,
        "wal: {} slots, {range}; headers ring: {valid} valid, {blank} blank",
        layout.wal_slot_count
    );
    if !verify {
        return Ok(());
    }
    let mut slot_bytes = vec![0u8; layout.wal_slot_size as usize];
    let (mut checked, mut faults) = (0u64, 0u64);
    for (slot, redundant) in headers.iter().enumerate() {
        file.read_exact_at(&mut slot_bytes, layout.entry_offset(slot as u64))?;
        let own = EntryHeader::decode(&slot_bytes[..ENTRY_HEADER]);
        let fault = match (&own, redundant) {
            (Err(HeaderError::Blank), None) => None,
            (Err(e), _) => Some(format!("its header does not decode ({e:?})")),
            (Ok(h), _) => {
                let end = ENTRY_HEADER + h.size as usize;
                if end > slot_bytes.len()
                    || checksum(&slot_bytes[ENTRY_HEADER..end]) != h.body_checksum
                {
                    Some(format!("entry {}'s body fails its checksum", h.index))
                } else {
                    None
                }
            }
        };
        checked += own.is_ok() as u64;
        if let Some(why) = fault {
            faults += 1;
            damage.push(format!(
                "wal entry slot {slot} at offset {}: {why}",
                layout.entry_offset(slot as u64)
            ));
        }
    }
    let _ = writeln!(
        text,
        "  entries ring: {checked} entries verified, {faults} faulty"
    );
    Ok(())
}

/// The checkpoint's blocks in the layout's grid zone (the current half), then the LSM's grid
/// after the fixed zones.
#[allow(clippy::too_many_arguments)]
fn grid(
    file: &File,
    layout: &Layout,
    chosen: &Superblock,
    len: u64,
    verify: bool,
    text: &mut String,
    damage: &mut Vec<String>,
    progress: &mut impl FnMut(f64),
) -> std::io::Result<()> {
    let block_size = layout.grid_block_size;
    let lsm_start = layout.total_size().next_multiple_of(block_size);
    let blocks = len.saturating_sub(lsm_start) / block_size;
    let used = checkpoint::blocks_for(layout, chosen.state_size);
    let free = layout.grid_block_count.saturating_sub(used);
    let _ = writeln!(
        text,
        "checkpoint blocks: {used} of the current half (area {}), {free} free beside them",
        chosen.state_area
    );
    if !verify {
        let _ = writeln!(
            text,
            "lsm grid: {blocks} blocks of {block_size} bytes (--verify reads them)"
        );
        return Ok(());
    }
    let mut block = vec![0u8; block_size as usize];
    let (first, _) = checkpoint::area_blocks(layout, chosen.state_area);
    for n in 0..used {
        let address = first + n;
        let offset = layout.grid_block_offset(address);
        file.read_exact_at(&mut block, offset)?;
        if checkpoint::decode_block(&block, address, chosen.checkpoint_index).is_none() {
            damage.push(format!("checkpoint block {address} at offset {offset}: checksum, address or index mismatch"));
        }
    }
    let mut counts = [0u64; 5]; // never written, data, index, filter, manifest
    let mut bytes_used = 0u64;
    for address in 0..blocks {
        let offset = lsm_start + address * block_size;
        file.read_exact_at(&mut block, offset)?;
        if address % 1024 == 0 {
            progress(address as f64 / blocks.max(1) as f64);
        }
        if block.iter().all(|&b| b == 0) {
            counts[0] += 1;
            continue;
        }
        match check_block(&block, address) {
            Ok((kind, size)) => {
                counts[kind as usize] += 1;
                bytes_used += size as u64;
            }
            Err(why) => damage.push(format!("grid block {address} at offset {offset}: {why}")),
        }
    }
    let _ = writeln!(
        text,
        "lsm grid: {blocks} blocks of {block_size} bytes: {} data, {} index, {} filter, {} manifest \
         ({bytes_used} payload bytes), {} never written",
        counts[1], counts[2], counts[3], counts[4], counts[0]
    );
    Ok(())
}

/// The checkpoint's LSM tree, opened from the file as a replica would restore it: tables and
/// bytes per level, and the grid's blocks in use and free.
fn manifest(
    file: &File,
    config: &Config,
    chosen: &Superblock,
    text: &mut String,
) -> std::io::Result<()> {
    if chosen.checkpoint_index == 0 {
        let _ = writeln!(
            text,
            "manifest: no checkpoint yet (the state is in the WAL)"
        );
        return Ok(());
    }
    let layout = Layout::new(config);
    let (first, _) = checkpoint::area_blocks(&layout, chosen.state_area);
    let mut blob = Vec::with_capacity(chosen.state_size as usize);
    let mut block = vec![0u8; layout.grid_block_size as usize];
    for n in 0..checkpoint::blocks_for(&layout, chosen.state_size) {
        file.read_exact_at(&mut block, layout.grid_block_offset(first + n))?;
        match checkpoint::decode_block(&block, first + n, chosen.checkpoint_index) {
            Some(payload) => blob.extend_from_slice(payload),
            None => {
                let _ = writeln!(
                    text,
                    "manifest: the checkpoint's blob is damaged (--verify)"
                );
                return Ok(());
            }
        }
    }
    let reply_max = layout.reply_slot_size as usize - ziggy_core::sessions::REPLY_HEADER_SIZE;
    let Some((_, state)) =
        ziggy_core::sessions::Sessions::decode(config.clients_max as usize, reply_max, &blob)
    else {
        let _ = writeln!(
            text,
            "manifest: the checkpoint's client table does not decode"
        );
        return Ok(());
    };
    let block_size = layout.grid_block_size;
    let lsm_start = layout.total_size().next_multiple_of(block_size);
    let grid = crate::db::FileGrid::new(file.try_clone()?, lsm_start, block_size as usize)?;
    let mut machine = ziggy_redis::RedisStateMachine::new(config, Box::new(grid));
    use ziggy_core::state_machine::StateMachine;
    if let Err(e) = machine.restore(state) {
        let _ = writeln!(text, "manifest: the state does not open: {e}");
        return Ok(());
    }
    let engine = machine.lsm().engine();
    let shape = engine.shape();
    let _ = writeln!(
        text,
        "manifest: {} tables, {} levels in use",
        shape.iter().sum::<usize>(),
        shape.iter().rposition(|&n| n > 0).map_or(0, |l| l + 1)
    );
    for (level, tables) in shape.iter().enumerate().filter(|(_, &n)| n > 0) {
        let bytes = engine.level_bytes(level);
        let _ = writeln!(text, "  level {level}: {tables} tables, {bytes} bytes");
    }
    let in_use = engine.blocks_in_use();
    let count = ziggy_core::lsm::BlockStore::block_count(engine.store_mut());
    let _ = writeln!(
        text,
        "free space: {} of {count} grid blocks free ({} bytes)",
        count.saturating_sub(in_use),
        count.saturating_sub(in_use) * block_size
    );
    Ok(())
}

/// Checks a block's envelope: its checksum, the address it names, its kind, and the zero
/// padding after its payload (which the checksum does not cover).
fn check_block(block: &[u8], address: u64) -> Result<(BlockKind, usize), String> {
    let size = u32::from_le_bytes(block[8..12].try_into().unwrap()) as usize;
    if size > block.len() - BLOCK_HEADER {
        return Err(format!("a payload size of {size} bytes"));
    }
    let stored = u32::from_le_bytes(block[0..4].try_into().unwrap());
    if checksum(&block[4..BLOCK_HEADER + size]) != stored {
        return Err("checksum mismatch".into());
    }
    let named = u64::from_le_bytes(block[16..24].try_into().unwrap());
    if named != address {
        return Err(format!("names address {named} (a misdirected write)"));
    }
    let kind = BlockKind::from_u8(block[4]).ok_or("an unknown kind")?;
    if block[BLOCK_HEADER + size..].iter().any(|&b| b != 0) {
        return Err("bytes after the payload are not zero".into());
    }
    Ok((kind, size))
}
