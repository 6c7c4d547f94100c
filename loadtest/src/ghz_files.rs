//! The ghz files under `loadtest/ghz/` are what a bastion runs. They are
//! generated from the seed's definition (`loadtest/scenarios.json`): one
//! config per scenario, one call-data template per scenario family (the
//! name before its last dash: `burst`, `duplicate`). These tests fail when a
//! file differs from what the definition makes; with `SLOTGATE_WRITE_GHZ=1`
//! set they write the files instead.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    path::{Path, PathBuf},
    process::Command,
};

use serde_json::json;
use slotgate::domain::{Limits, NewReservation};

use crate::{
    ghz::{GhzConfig, render, reservation_from_json},
    scenarios::{Scenario, Seed, seed},
};

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_owned()
}

/// A JSON string literal.
fn quoted(text: &str) -> String {
    json!(text).to_string()
}

/// `burst-800` -> `burst`: the scenarios of a family share one template.
fn family(scenario: &Scenario) -> &str {
    scenario.name.rsplit_once('-').map_or(&scenario.name, |(family, _)| family)
}

/// Every file under `loadtest/ghz/` the definition makes, by path from the
/// repository root.
fn generate(seed: &Seed) -> Result<BTreeMap<String, String>, String> {
    let mut files = BTreeMap::new();
    let mut clicks_of_family: HashMap<&str, usize> = HashMap::new();
    for s in &seed.scenarios {
        let family = family(s);
        if *clicks_of_family.entry(family).or_insert(s.clicks) != s.clicks {
            return Err(format!("{}: the {family} scenarios share one call-data template, so one click count", s.name));
        }
        let data_file = format!("loadtest/ghz/data/{family}.json");
        // The clicks of one user share a user id, each with a request id
        // of its own; ghz numbers requests from 0.
        let user = match s.clicks {
            1 => "{{.RequestNumber}}".to_owned(),
            n => format!("{{{{div .RequestNumber {n}}}}}"),
        };
        let data = format!(
            "{{\n  \"request_id\": {},\n  \"user_id\": {},\n  \"slot\": {{ \"restaurant_id\": {}, \"date\": {}, \"time\": {} }},\n  \"party_size\": {},\n  \"type\": \"RESERVATION_DEPOSIT\"\n}}\n",
            quoted(&format!("{family}-{{{{.TimestampUnixNano}}}}-{{{{.RequestNumber}}}}")),
            quoted(&format!("{family}-user-{user}")),
            quoted(&seed.restaurant_id.to_string()),
            quoted(&seed.date),
            quoted(&seed.time),
            seed.party_size,
        );
        files.insert(data_file.clone(), data);

        let mut tags = vec![("scenario", s.name.clone()), ("users", s.users.to_string())];
        if s.clicks > 1 {
            tags.push(("clicks-per-user", s.clicks.to_string()));
        }
        tags.push(("expected-winners", s.winners.to_string()));
        let tags: Vec<String> = tags.iter().map(|(k, v)| format!("{}: {}", quoted(k), quoted(v))).collect();
        // Every call at once (concurrency = total), and refusals counted in
        // the latency figures: they are most of a burst.
        let config = format!(
            "{{\n  \"name\": {name},\n  \"proto\": \"proto/slotgate/v1/reservations.proto\",\n  \"call\": \"slotgate.v1.Reservations.CreateReservation\",\n  \"host\": \"127.0.0.1:50051\",\n  \"insecure\": true,\n  \"total\": {total},\n  \"concurrency\": {total},\n  \"connections\": 8,\n  \"timeout\": \"20s\",\n  \"data-file\": {data_file},\n  \"count-errors\": true,\n  \"tags\": {{ {tags} }}\n}}\n",
            name = quoted(&s.name),
            total = s.calls(),
            data_file = quoted(&data_file),
            tags = tags.join(", "),
        );
        files.insert(format!("loadtest/ghz/{}.json", s.name), config);
    }
    Ok(files)
}

fn json_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    files
}

#[test]
fn the_ghz_files_are_what_the_definition_makes() {
    let files = generate(seed()).unwrap();
    let write = std::env::var_os("SLOTGATE_WRITE_GHZ").is_some_and(|v| v == "1");
    let mut wrong = Vec::new();
    for (path, content) in &files {
        let on_disk = std::fs::read_to_string(repo().join(path)).ok();
        if on_disk.as_deref() == Some(content.as_str()) {
            continue;
        }
        if write {
            std::fs::write(repo().join(path), content).unwrap();
            eprintln!("wrote {path}");
        } else {
            wrong.push(format!("{path} {}", if on_disk.is_some() { "differs" } else { "is missing" }));
        }
    }
    let ghz = repo().join("loadtest/ghz");
    for path in json_files(&ghz).into_iter().chain(json_files(&ghz.join("data"))) {
        let path = path.strip_prefix(repo()).unwrap().to_string_lossy().into_owned();
        if !files.contains_key(&path) {
            wrong.push(format!("{path} belongs to no scenario of loadtest/scenarios.json: delete it"));
        }
    }
    assert!(
        wrong.is_empty(),
        "loadtest/ghz/ disagrees with loadtest/scenarios.json:\n  {}\n\
         SLOTGATE_WRITE_GHZ=1 cargo test -p slotgate-load ghz_files writes what the definition makes",
        wrong.join("\n  ")
    );
}

#[test]
fn a_family_shares_its_click_count() {
    let mut seed: Seed = serde_json::from_str(crate::scenarios::DEFINITION).unwrap();
    let first = seed.scenarios.iter().position(|s| s.clicks == 1).unwrap();
    seed.scenarios[first].clicks = 2;
    assert!(generate(&seed).unwrap_err().contains("one click count"));
}

/// What a ghz config's call data makes, request by request, checked against
/// the scenario: valid requests, unique request ids, `users` users of
/// `clicks` clicks each, all into `slot` with the seed's party size.
fn check_call_data(file: &str, template: &str, s: &Scenario, slot: (i64, &str, &str)) {
    let limits = Limits { max_party_size: 20, max_menu_items: 50 };
    let mut clicks_of: HashMap<String, usize> = HashMap::new();
    let mut request_ids = HashSet::new();
    for n in 0..s.calls() as u64 {
        let request = reservation_from_json(&render(template, n, "w0").unwrap()).unwrap();
        NewReservation::parse(&request, limits).unwrap_or_else(|e| panic!("{file}: request {n} is invalid: {e}"));
        let at = request.slot.as_ref().unwrap();
        assert_eq!((at.restaurant_id, at.date.as_str(), at.time.as_str()), slot, "{file}: request {n}'s slot");
        assert_eq!(request.party_size, seed().party_size, "{file}: party size");
        assert!(request_ids.insert(request.request_id.clone()), "{file}: request id repeated");
        *clicks_of.entry(request.user_id).or_default() += 1;
    }
    assert_eq!(clicks_of.len(), s.users, "{file}: users");
    assert!(clicks_of.values().all(|&c| c == s.clicks), "{file}: {} clicks per user", s.clicks);
}

#[test]
fn every_ghz_config_parses_and_its_call_data_makes_the_seed_scenario() {
    let seed = seed();
    for s in &seed.scenarios {
        let file = format!("{}.json", s.name);
        let config = GhzConfig::read(&repo().join("loadtest/ghz").join(&file)).unwrap();
        let total = s.calls() as u64;
        assert_eq!(config.name.as_deref(), Some(s.name.as_str()), "{file}");
        assert_eq!(config.total, Some(total), "{file}");
        assert_eq!(config.concurrency, Some(total as usize), "{file}: every call at once");
        assert_eq!(config.count_errors, Some(true), "{file}: refusals must count in the latency figures");
        assert_eq!(config.call.as_deref(), Some("slotgate.v1.Reservations.CreateReservation"));
        let tags = config.tags.as_ref().unwrap();
        assert_eq!(tags.get("expected-winners"), Some(&s.winners.to_string()), "{file}: tags");
        assert!(repo().join(config.proto.as_deref().unwrap()).is_file(), "{file}: proto path");
        let template = std::fs::read_to_string(repo().join(config.data_file.as_deref().unwrap())).unwrap();
        check_call_data(&file, &template, s, (seed.restaurant_id, &seed.date, &seed.time));
    }
}

/// A fresh `bin` folder under `work` for stand-in commands.
fn stub_dir(work: &std::path::Path) -> std::path::PathBuf {
    let _ = std::fs::remove_dir_all(work);
    let bin = work.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    bin
}

/// An executable shell script `name` in `bin` running `body`.
fn write_stub(bin: &std::path::Path, name: &str, body: &str) {
    use std::os::unix::fs::PermissionsExt;
    let path = bin.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// `loadtest/ghz/run.sh` with stand-ins for grpcurl and ghz that record
/// what they were given: it must open the definition's slot (at the current
/// minute) and hand ghz call data pointed at that same slot.
#[test]
fn run_sh_opens_the_definitions_slot_and_points_the_call_data_at_it() {
    let seed = seed();
    let work = std::env::temp_dir().join(format!("slotgate-run-sh-{}", std::process::id()));
    let bin = stub_dir(&work);
    let stub = |name: &str, body: &str| write_stub(&bin, name, body);
    stub("grpcurl", "printf '%s\\n' \"$@\" > \"$STUB_OUT/grpcurl.args\"\n");
    stub(
        "ghz",
        "printf '%s\\n' \"$@\" > \"$STUB_OUT/ghz.args\"\n\
         while [ $# -gt 0 ]; do [ \"$1\" = --data-file ] && cp \"$2\" \"$STUB_OUT/data.json\"; shift; done\n\
         exit 0\n",
    );
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    for s in &seed.scenarios {
        let output = Command::new("sh")
            .arg("loadtest/ghz/run.sh")
            .arg(&s.name)
            .arg("127.0.0.1:1")
            .current_dir(repo())
            .env("PATH", &path)
            .env("STUB_OUT", &work)
            .env_remove("SLOTGATE_TOKEN")
            .env_remove("SLOT_DATE")
            .env_remove("GRPCURL_FLAGS")
            .output()
            .unwrap();
        assert!(output.status.success(), "run.sh {}: {}", s.name, String::from_utf8_lossy(&output.stderr));

        let grpcurl = std::fs::read_to_string(work.join("grpcurl.args")).unwrap();
        let grpcurl: Vec<&str> = grpcurl.lines().collect();
        assert!(grpcurl.contains(&"slotgate.v1.SlotAdmin/OpenSlots"), "{grpcurl:?}");
        let body = grpcurl[grpcurl.iter().position(|a| *a == "-d").unwrap() + 1];
        let opened: serde_json::Value = serde_json::from_str(body).unwrap();
        let slot = &opened["slots"][0];
        assert_eq!(slot["capacity"], json!(seed.capacity), "run.sh {}: capacity", s.name);
        assert_eq!(slot["slot"]["restaurant_id"], json!(seed.restaurant_id), "run.sh {}: restaurant", s.name);
        assert_eq!(slot["slot"]["date"], json!(seed.date), "run.sh {}: date", s.name);
        let time = slot["slot"]["time"].as_str().unwrap().to_owned();

        let ghz = std::fs::read_to_string(work.join("ghz.args")).unwrap();
        let ghz: Vec<&str> = ghz.lines().collect();
        let config = ghz[ghz.iter().position(|a| *a == "--config").unwrap() + 1];
        assert_eq!(Path::new(config), Path::new("loadtest/ghz").join(format!("{}.json", s.name)));
        assert_eq!(ghz.last(), Some(&"127.0.0.1:1"), "the host comes last");
        let template = std::fs::read_to_string(work.join("data.json")).unwrap();
        check_call_data(&format!("run.sh {}", s.name), &template, s, (seed.restaurant_id, &seed.date, &time));
    }
    let _ = std::fs::remove_dir_all(&work);
}

/// `run.sh --opens-in SECONDS --early N` with stand-ins for grpcurl and
/// ghz: the slot is opened with `opens_at` a whole second SECONDS or more
/// ahead, the early ghz run gets N calls of its own ids and users and the
/// options given less those it sets itself, GetRemaining is asked, and the
/// scenario's ghz starts at `opens_at` or after. Seats gone before the
/// opening stop the run; bad options are refused before anything is sent.
#[test]
fn run_sh_opens_the_slot_later_and_fires_early_calls_before_the_opening() {
    let seed = seed();
    let s = seed.scenario(&seed.headline).unwrap();
    let work = std::env::temp_dir().join(format!("slotgate-run-sh-opening-{}", std::process::id()));
    let bin = stub_dir(&work);
    let stub = |name: &str, body: &str| write_stub(&bin, name, body);
    stub(
        "grpcurl",
        "{ printf '%s\\n' \"$@\"; echo ---; } >> \"$STUB_OUT/grpcurl.log\"\n\
         case \"$*\" in *GetRemaining*) printf '{\\n  \"remaining\": %s,\\n  \"capacity\": 40,\\n  \"state\": \"NOT_YET_OPEN\"\\n}\\n' \"$STUB_REMAINING\" ;; esac\n",
    );
    stub(
        "ghz",
        "i=$(cat \"$STUB_OUT/ghz.count\" 2>/dev/null || echo 0); echo $((i + 1)) > \"$STUB_OUT/ghz.count\"\n\
         date +%s%N > \"$STUB_OUT/ghz.$i.at\"\n\
         printf '%s\\n' \"$@\" > \"$STUB_OUT/ghz.$i.args\"\n\
         while [ $# -gt 0 ]; do [ \"$1\" = --data-file ] && cp \"$2\" \"$STUB_OUT/ghz.$i.data\"; shift; done\n\
         exit 0\n",
    );
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    let run = |remaining: i32, args: &[&str]| {
        for f in ["grpcurl.log", "ghz.count", "ghz.0.args", "ghz.1.args"] {
            let _ = std::fs::remove_file(work.join(f));
        }
        Command::new("sh")
            .arg("loadtest/ghz/run.sh")
            .arg(&s.name)
            .arg("127.0.0.1:1")
            .args(args)
            .current_dir(repo())
            .env("PATH", &path)
            .env("STUB_OUT", &work)
            .env("STUB_REMAINING", remaining.to_string())
            .env_remove("SLOTGATE_TOKEN")
            .env_remove("SLOT_DATE")
            .env_remove("GRPCURL_FLAGS")
            .output()
            .unwrap()
    };
    let lines = |file: &str| -> Vec<String> {
        std::fs::read_to_string(work.join(file)).unwrap().lines().map(str::to_owned).collect()
    };
    let after = |args: &[String], flag: &str| args[args.iter().position(|a| a == flag).unwrap() + 1].clone();

    let start = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    let ghz_options = ["--cacert", "ca file.pem", "-O", "json", "-o", "out.json", "-c100", "--connections=2"];
    let early_and_options: Vec<&str> = ["--opens-in", "2", "--early", "5"].into_iter().chain(ghz_options).collect();
    let output = run(seed.capacity, &early_and_options);
    assert!(output.status.success(), "run.sh: {}", String::from_utf8_lossy(&output.stderr));

    // OpenSlots with opens_at a whole second more than 2 s ahead, then GetRemaining.
    let grpcurl = lines("grpcurl.log");
    let calls: Vec<&[String]> = grpcurl.split(|l| l == "---").filter(|c| !c.is_empty()).collect();
    assert_eq!(calls.len(), 2, "{grpcurl:?}");
    assert_eq!(calls[0].last().map(String::as_str), Some("slotgate.v1.SlotAdmin/OpenSlots"));
    let opened: serde_json::Value = serde_json::from_str(&after(calls[0], "-d")).unwrap();
    let slot = &opened["slots"][0];
    assert_eq!(slot["capacity"], json!(seed.capacity));
    let opens_at = slot["opens_at"].as_str().unwrap();
    let opens = chrono::DateTime::parse_from_rfc3339(opens_at).unwrap();
    assert!(opens_at.ends_with('Z') && opens.timestamp_subsec_nanos() == 0, "{opens_at}");
    let opens = opens.timestamp() as f64;
    assert!(opens > start + 2.0 && opens <= start + 4.0, "opens_at {opens_at} for --opens-in 2 at {start}");
    assert_eq!(calls[1].last().map(String::as_str), Some("slotgate.v1.Reservations/GetRemaining"));
    let asked: serde_json::Value = serde_json::from_str(&after(calls[1], "-d")).unwrap();
    assert_eq!(asked["slot"], slot["slot"], "GetRemaining asks of the slot opened");
    let time = slot["slot"]["time"].as_str().unwrap();

    // The early run: 5 calls of their own, at 5/s, with the TLS options but
    // none of those it sets itself.
    assert_eq!(std::fs::read_to_string(work.join("ghz.count")).unwrap().trim(), "2", "two ghz runs");
    let early = lines("ghz.0.args");
    assert_eq!(
        [after(&early, "-n"), after(&early, "-c"), after(&early, "--rps"), after(&early, "--connections")],
        ["5", "5", "5", "5"]
    );
    assert_eq!(after(&early, "--format"), "summary");
    assert_eq!(after(&early, "--cacert"), "ca file.pem", "an option's words survive as they were");
    for dropped in ["-O", "json", "-o", "out.json", "-c100", "--connections=2"] {
        assert!(!early.iter().any(|a| a == dropped), "the early run got {dropped}: {early:?}");
    }
    assert_eq!(early.last().map(String::as_str), Some("127.0.0.1:1"));
    let template = std::fs::read_to_string(work.join("ghz.0.data")).unwrap();
    check_call_data("run.sh --early", &template, s, (seed.restaurant_id, &seed.date, time));
    for n in 0..s.calls() as u64 {
        let request = reservation_from_json(&render(&template, n, "w0").unwrap()).unwrap();
        assert!(request.request_id.starts_with("early-") && request.user_id.starts_with("early-"), "{request:?}");
    }

    // The scenario: every option given, its own call data, at opens_at or after.
    let main = lines("ghz.1.args");
    assert_eq!(main[main.len() - ghz_options.len() - 1..main.len() - 1], ghz_options.map(str::to_owned));
    assert_eq!(main.last().map(String::as_str), Some("127.0.0.1:1"));
    let template = std::fs::read_to_string(work.join("ghz.1.data")).unwrap();
    check_call_data("run.sh --opens-in", &template, s, (seed.restaurant_id, &seed.date, time));
    let started: f64 = std::fs::read_to_string(work.join("ghz.1.at")).unwrap().trim().parse::<f64>().unwrap() / 1e9;
    assert!(started >= opens, "the scenario's ghz started at {started}, before opens_at {opens}");

    // Seats gone before the opening: no scenario run.
    let output = run(seed.capacity - seed.party_size, &["--opens-in", "2", "--early", "5"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("seats went before the opening"));
    assert_eq!(std::fs::read_to_string(work.join("ghz.count")).unwrap().trim(), "1", "only the early run");

    // Bad options: refused before anything is sent.
    for args in [&["--early", "5"][..], &["--opens-in", "1", "--early", "5"], &["--opens-in", "2s"], &["--early", "x"]]
    {
        let output = run(seed.capacity, args);
        assert_eq!(output.status.code(), Some(2), "run.sh {args:?}");
        assert!(!work.join("grpcurl.log").exists(), "run.sh {args:?} called grpcurl");
    }
    let _ = std::fs::remove_dir_all(&work);
}

#[test]
fn the_contract_compiles_with_plain_protoc_and_no_extra_import_paths() {
    // Only the file's own directory, as ghz's --proto gives it, plus the
    // well-known types that every protoc (and ghz) ships with.
    let protoc = protoc_bin_vendored::protoc_bin_path().unwrap();
    let well_known = protoc_bin_vendored::include_path().unwrap();
    let out = std::env::temp_dir().join(format!("slotgate-protoc-{}.pb", std::process::id()));
    let status = Command::new(protoc)
        .arg("-I")
        .arg(repo().join("proto/slotgate/v1"))
        .arg("-I")
        .arg(well_known)
        .arg("--descriptor_set_out")
        .arg(&out)
        .arg("reservations.proto")
        .status()
        .unwrap();
    let _ = std::fs::remove_file(&out);
    assert!(status.success(), "protoc rejected proto/slotgate/v1/reservations.proto");
}
