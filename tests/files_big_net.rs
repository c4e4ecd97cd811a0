//! Files at any size (issue 11), with the real binary: a gigabyte through
//! 10% random loss arrives intact with both sides' peak memory measured
//! under the bound; a receiver restarted mid-carousel resumes from the
//! blocks it stored; a directory arrives with its relative paths; and a key
//! holder flooding repair symbols that never decode cannot make a receiver
//! grow past its cap, measured as RSS.
//!
//! Network safety: each test runs on a thread of its own in a fresh network
//! namespace (unshare(CLONE_NEWNET)) with only lo, its multicast route and
//! an nftables table; nothing it sends can leave it. Without the right to
//! make one, or without `nft`, a test fails, unless MCSEC_SKIP_NETNS=1.

mod common;

use std::io::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use common::{Proc, in_lossy_netns, injector, keyfile, recv, spawn, terminate};

/// The peak memory bound the issue sets for either side, at any size.
const RSS_BOUND_KIB: u64 = 160 * 1024;

/// Writes `len` pseudo-random bytes; returns their SHA-256.
fn random_file(path: &Path, len: u64, seed: u64) -> [u8; 32] {
    let mut f = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path).unwrap());
    let mut hasher = Sha256::new();
    let mut x = seed | 1;
    let mut chunk = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        for word in chunk.chunks_exact_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            word.copy_from_slice(&x.to_le_bytes());
        }
        let n = left.min(chunk.len() as u64) as usize;
        f.write_all(&chunk[..n]).unwrap();
        hasher.update(&chunk[..n]);
        left -= n as u64;
    }
    f.flush().unwrap();
    hasher.finalize().into()
}

fn sha_of(path: &Path) -> [u8; 32] {
    use std::io::Read as _;
    let mut f = std::fs::File::open(path).unwrap();
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            return hasher.finalize().into();
        }
        hasher.update(&buf[..n]);
    }
}

fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Samples the peak RSS of each process until every one has exited (its
/// /proc entry stays until it is reaped, so the last sample is its peak).
fn watch_peaks(procs: &mut [&mut Proc], limit: Duration) -> Vec<u64> {
    let mut peaks = vec![0; procs.len()];
    let started = Instant::now();
    loop {
        let mut running = 0;
        for (p, peak) in procs.iter_mut().zip(&mut peaks) {
            if let Some(kib) = peak_rss_kib(p.child.id()) {
                *peak = (*peak).max(kib);
            }
            if p.child.try_wait().unwrap().is_none() {
                running += 1;
            }
        }
        if running == 0 {
            return peaks;
        }
        assert!(started.elapsed() < limit, "still running after {limit:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A receiver that has exited (or is made to, with SIGTERM): its status,
/// stdout lines, json stats and stderr lines.
fn ended(
    p: Proc,
) -> (
    std::process::ExitStatus,
    Vec<String>,
    serde_json::Value,
    Vec<String>,
) {
    let mut p = p;
    if p.child.try_wait().unwrap().is_none() {
        common::signal(&p, "TERM");
    }
    let (status, out, err) = p.finish();
    let stats = out
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["type"] == "stats")
        .unwrap_or_else(|| panic!("no stats: {out:?} {err:?}"));
    (status, out, stats, err)
}

fn saved_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(saved_files(&p));
        } else {
            out.push(p);
        }
    }
    out.sort();
    out
}

#[test]
fn a_gigabyte_crosses_ten_percent_loss_intact_under_the_memory_bound() {
    let group = "239.255.97.1";
    in_lossy_netns("a_gigabyte_crosses...", group, 10, || {
        let dir = tempfile::tempdir().unwrap();
        let key = keyfile(dir.path(), "k");
        let save = dir.path().join("in");
        std::fs::create_dir(&save).unwrap();
        let path = dir.path().join("disk.img");
        let len = 1u64 << 30;
        let sha = random_file(&path, len, 0x1234_5678);
        let g = format!("{group}:46701");
        let mut receiver = recv(
            &g,
            &key,
            &[
                "--format",
                "json",
                "--save-dir",
                save.to_str().unwrap(),
                "--count",
                "1",
                "--rcvbuf",
                "8M",
            ],
        );
        let mut sender = spawn(
            &[
                "send",
                "-g",
                &g,
                "-i",
                "127.0.0.1",
                "--file",
                path.to_str().unwrap(),
                "--repair",
                "20",
                "--repeat",
                "3",
                "--rate",
                "600M",
            ],
            &key,
        );
        let peaks = watch_peaks(&mut [&mut sender, &mut receiver], Duration::from_secs(600));
        let (status, out, stats, err) = ended(receiver);
        assert!(status.success(), "{err:?}");
        let (status, _, send_err) = sender.finish();
        assert!(status.success(), "send: {send_err:?}");
        let file = out
            .iter()
            .find(|l| l.contains("\"type\":\"file\""))
            .unwrap_or_else(|| panic!("no file delivered: {stats} {err:?}"));
        let files = saved_files(&save);
        assert_eq!(files, vec![save.join("disk.img")], "{file}");
        assert_eq!(sha_of(&files[0]), sha, "the file arrived intact");
        // It crossed real loss: frames were lost and blocks decoded.
        assert!(stats["lost"].as_u64().unwrap() > 0, "{stats}");
        assert!(
            stats["file_decode_attempts"].as_u64().unwrap() > 0,
            "{stats}"
        );
        eprintln!(
            "1 GiB through 10% loss: peak RSS send {} KiB, recv {} KiB; {stats}",
            peaks[0], peaks[1]
        );
        assert!(peaks[0] < RSS_BOUND_KIB, "sender peak {} KiB", peaks[0]);
        assert!(peaks[1] < RSS_BOUND_KIB, "receiver peak {} KiB", peaks[1]);
    });
}

#[test]
fn a_restarted_receiver_resumes_from_the_blocks_it_stored() {
    let group = "239.255.97.2";
    in_lossy_netns("a_restarted_receiver...", group, 0, || {
        let dir = tempfile::tempdir().unwrap();
        let key = keyfile(dir.path(), "k");
        let save = dir.path().join("in");
        std::fs::create_dir(&save).unwrap();
        let path = dir.path().join("big.bin");
        let len = 96u64 << 20;
        let sha = random_file(&path, len, 99);
        let g = format!("{group}:46702");
        let args = [
            "--format",
            "json",
            "--save-dir",
            save.to_str().unwrap(),
            "--count",
            "1",
        ];
        let first = recv(&g, &key, &args);
        let sender = spawn(
            &[
                "send",
                "-g",
                &g,
                "-i",
                "127.0.0.1",
                "--file",
                path.to_str().unwrap(),
                "--repeat",
                "20",
                "--rate",
                "200M",
            ],
            &key,
        );
        // Stop the first receiver once it logged some blocks as stored.
        let log = || {
            std::fs::read_dir(&save)
                .unwrap()
                .filter_map(Result::ok)
                .find(|e| e.file_name().to_string_lossy().ends_with(".blocks"))
                .map(|e| e.path())
        };
        let started = Instant::now();
        loop {
            let logged = log().map_or(0, |p| std::fs::metadata(p).unwrap().len());
            if logged > 200 {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "no blocks stored"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let (status, _, stats1, _) = ended(first);
        assert_eq!(status.code(), Some(3), "cut short of --count");
        assert_eq!(stats1["files_completed"], 0, "{stats1}");
        assert!(log().is_some(), "the partial file stays for a resume");
        let second = recv(&g, &key, &args);
        let mut second = second;
        let started = Instant::now();
        while second.child.try_wait().unwrap().is_none() {
            assert!(started.elapsed() < Duration::from_secs(120), "no resume");
            std::thread::sleep(Duration::from_millis(50));
        }
        let (status, out, stats2, err) = ended(second);
        assert!(status.success(), "{err:?}");
        drop(sender);
        assert!(
            out.iter().any(|l| l.contains("\"type\":\"file\"")),
            "{stats2} {err:?}"
        );
        // JSON progress events, at most one a second per file, on the way.
        let progress: Vec<serde_json::Value> = out
            .iter()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["type"] == "progress")
            .collect();
        assert!(!progress.is_empty(), "{out:?}");
        for p in &progress {
            assert_eq!(p["path"], "big.bin");
            assert_eq!(p["len"], len);
            assert!(p["stored"].as_u64().unwrap() <= len);
        }
        let resumed = stats2["file_blocks_resumed"].as_u64().unwrap();
        assert!(resumed > 0, "{stats2}");
        assert_eq!(sha_of(&save.join("big.bin")), sha);
        assert!(log().is_none(), "the log goes with the finished file");
        eprintln!("resumed {resumed} blocks; {stats2}");
    });
}

#[test]
fn a_directory_arrives_with_its_paths_and_never_escapes() {
    let group = "239.255.97.3";
    in_lossy_netns("a_directory_arrives...", group, 0, || {
        let dir = tempfile::tempdir().unwrap();
        let key = keyfile(dir.path(), "k");
        let save = dir.path().join("in");
        std::fs::create_dir(&save).unwrap();
        let tree = dir.path().join("photos");
        std::fs::create_dir_all(tree.join("2026/dec")).unwrap();
        std::fs::create_dir_all(tree.join(".hidden")).unwrap();
        let a = random_file(&tree.join("a.jpg"), 300_000, 1);
        let b = random_file(&tree.join("2026/dec/b.jpg"), 2_000_000, 2);
        let c = random_file(&tree.join(".hidden/-c"), 10, 3);
        let lone = dir.path().join("lone.txt");
        let d = random_file(&lone, 5, 4);
        std::fs::write(tree.join("empty"), b"").unwrap();
        // Already there: must survive, and the new copy gets a suffix.
        std::fs::create_dir(save.join("photos")).unwrap();
        std::fs::write(save.join("photos/a.jpg"), b"old").unwrap();
        let g = format!("{group}:46703");
        let receiver = recv(
            &g,
            &key,
            &[
                "--format",
                "json",
                "--save-dir",
                save.to_str().unwrap(),
                "--count",
                "4",
            ],
        );
        let sender = spawn(
            &[
                "send",
                "-g",
                &g,
                "-i",
                "127.0.0.1",
                "--file",
                tree.to_str().unwrap(),
                "--file",
                lone.to_str().unwrap(),
                "--rate",
                "200M",
            ],
            &key,
        );
        let (status, _, send_err) = sender.finish();
        assert!(status.success(), "{send_err:?}");
        assert!(
            send_err
                .iter()
                .any(|l| l.contains("skipping") && l.contains("empty"))
        );
        let mut receiver = receiver;
        let started = Instant::now();
        while receiver.child.try_wait().unwrap().is_none() {
            assert!(started.elapsed() < Duration::from_secs(30));
            std::thread::sleep(Duration::from_millis(50));
        }
        let (status, out, stats, err) = ended(receiver);
        assert!(status.success(), "{err:?}");
        assert_eq!(stats["files_completed"], 4, "{stats} {out:?}");
        assert_eq!(std::fs::read(save.join("photos/a.jpg")).unwrap(), b"old");
        assert_eq!(sha_of(&save.join("photos/a-1.jpg")), a);
        assert_eq!(sha_of(&save.join("photos/2026/dec/b.jpg")), b);
        // Components are sanitized one by one: no hidden directory, no
        // name a command takes for an option.
        assert_eq!(sha_of(&save.join("photos/_hidden/_c")), c);
        assert_eq!(sha_of(&save.join("lone.txt")), d);
        let all = saved_files(&save);
        assert_eq!(all.len(), 5, "{all:?}");
    });
}

/// Repair symbols that never complete a block, for many files: what a key
/// holder can make a receiver hold. Its RSS must stay within the cap the
/// receiver charges (64 MiB by default) plus a small margin, however much
/// is sent.
#[test]
fn a_flood_of_repair_symbols_is_held_to_the_cap_in_measured_memory() {
    let group = "239.255.97.4";
    in_lossy_netns("a_flood_of_repair_symbols...", group, 0, || {
        let dir = tempfile::tempdir().unwrap();
        let key = keyfile(dir.path(), "k");
        let g = format!("{group}:46704");
        let receiver = recv(&g, &key, &["--format", "json", "--rcvbuf", "8M"]);
        let pid = receiver.child.id();
        let tx = injector(&g);
        let mut sealer = mcsec::Sealer::new(
            mcsec::Keyring::load(&key).unwrap().sending_key(),
            &common::channel(&g),
        )
        .unwrap();
        std::thread::sleep(Duration::from_millis(300));
        let before = peak_rss_kib(pid).unwrap();
        let symbol = vec![0x5au8; 1300];
        let mut buf = vec![0u8; 1472];
        let mut sent = 0u64;
        // 200 MiB of symbols: 32 files of 3200-symbol blocks (4.0 MB, under
        // the 4 MiB a block may hold), 5 blocks each, 1000 repair symbols a
        // block (never K of them).
        for round in 0..1000u32 {
            for file_id in 0..32u32 {
                for block in 0..5u64 {
                    let body = mcsec::Body::StreamSymbol(mcsec::body::StreamSymbol {
                        file_id,
                        file_len: 1 << 30,
                        symbol_size: 1300,
                        block_symbols: 3200,
                        block,
                        esi: 3200 + round,
                        sha256: [7; 32],
                        path: "flood",
                        symbol: &symbol,
                    });
                    let n = sealer.seal_body(mcsec::now_us(), &body, &mut buf).unwrap();
                    tx.send(&buf[..n]).unwrap();
                    sent += 1;
                }
            }
            // Pace: the point is what recv holds, not the kernel's queue.
            std::thread::sleep(Duration::from_micros(1500));
        }
        std::thread::sleep(Duration::from_millis(500));
        let after = peak_rss_kib(pid).unwrap();
        let (_, stats, _) = terminate(receiver);
        let grown = after.saturating_sub(before);
        eprintln!(
            "flood of {sent} repair symbols ({} MiB): recv peak {before} -> {after} KiB (+{grown} KiB); {stats}",
            (sent * 1300) >> 20
        );
        assert!(
            sent * 1300 > 3 * (64 << 20),
            "the flood exceeds the cap threefold"
        );
        assert!(
            stats["file_memory_full"].as_u64().unwrap() + stats["file_evicted"].as_u64().unwrap()
                > 0,
            "the cap was reached: {stats}"
        );
        assert_eq!(stats["files_completed"], 0);
        assert_eq!(stats["file_invalid"], 0, "every symbol taken: {stats}");
        // The cap is 64 MiB of charged memory; measured growth may exceed
        // it only by allocator slack.
        assert!(grown < 72 * 1024, "recv grew by {grown} KiB");
    });
}
