//! The README's "Try it in two minutes" runs as written: the fenced blocks marked `try-it` are
//! taken from README.md itself (so the two cannot drift) and run against a fresh moto and a
//! real `serve` on free loopback ports (`PORT` and `MCP_PORT`, which the README's commands
//! read with their defaults). The one line not run is `pip install`: the test tools' virtualenv
//! already has moto, boto3 and mcp, and a test never installs from the network.

mod common;

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use serde_json::Value;

/// How long the whole walk-through may take (moto's start is the slow part).
const LIMIT: Duration = Duration::from_secs(120);

/// A fenced block of the README: its info string and its lines.
struct Block {
    info: String,
    text: String,
}

fn try_it_blocks() -> Vec<Block> {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let mut blocks = Vec::new();
    let mut open: Option<Block> = None;
    for line in readme.lines() {
        match (&mut open, line.strip_prefix("```")) {
            (None, Some(info)) if info.split_whitespace().any(|w| w == "try-it") => {
                open = Some(Block { info: info.to_string(), text: String::new() })
            }
            (Some(_), Some("")) => blocks.extend(open.take()),
            (Some(block), _) => {
                block.text.push_str(line);
                block.text.push('\n');
            }
            _ => {}
        }
    }
    assert!(open.is_none(), "a try-it block is not closed");
    blocks
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Kills the walk-through's process group (moto, serve and its workers) however the test ends.
struct Group(Child);

impl Drop for Group {
    fn drop(&mut self) {
        let _ = killpg(Pid::from_raw(self.0.id() as i32), Signal::SIGKILL);
        let _ = self.0.wait();
    }
}

#[test]
fn the_readme_try_it_steps_run_as_written() {
    let Some(moto) = common::tool("AWSWL_MOTO_SERVER", "moto_server", "pip moto[server], in its venv") else {
        return;
    };
    let Some(python) = common::tool("AWSWL_PYTHON", "python3", "the test tools' venv") else { return };
    let Some(curl) = common::tool("AWSWL_CURL", "curl", "apt package curl") else { return };
    let blocks = try_it_blocks();
    let find = |lang: &str| {
        blocks
            .iter()
            .find(|b| b.info.split_whitespace().next() == Some(lang))
            .unwrap_or_else(|| panic!("no ```{lang} try-it block in README.md"))
    };
    let (sh, py, desktop) = (find("sh"), find("python"), find("json"));

    let dir = tempfile::tempdir().unwrap();
    let file = py.info.split_whitespace().find_map(|w| w.strip_prefix("file=")).expect("file=NAME");
    std::fs::write(dir.path().join(file), &py.text).unwrap();
    let (skipped, script): (Vec<&str>, Vec<&str>) =
        sh.text.lines().partition(|l| l.trim_start().starts_with("pip install"));
    assert_eq!(skipped.len(), 1, "only the pip install line is skipped: {skipped:?}");
    assert!(skipped[0].contains("moto[server]") && skipped[0].contains("mcp"), "{}", skipped[0]);

    // The tools the README installs and builds, first on PATH: moto_server and python3 (with
    // boto3 and mcp) from the venv, curl, and the awswhitelist under test.
    let dir_of = |p: &Path| p.parent().unwrap().to_path_buf();
    let bin_dir = dir_of(Path::new(common::BIN));
    let path: Vec<PathBuf> = vec![
        bin_dir.clone(),
        dir_of(&moto),
        dir_of(&python),
        dir_of(&curl),
        "/usr/bin".into(),
        "/bin".into(),
    ];
    let path = std::env::join_paths(path).unwrap();
    let (port, mcp_port) = (free_port(), free_port());
    let stdout = std::fs::File::create(dir.path().join("out.txt")).unwrap();
    let stderr = std::fs::File::create(dir.path().join("err.txt")).unwrap();
    let mut env = common::moto::client_env(dir.path());
    env.retain(|(k, _)| k == "HOME" || k.starts_with("AWS_CONFIG") || k.starts_with("AWS_SHARED"));
    let child = Command::new("bash")
        .args(["-e", "-c", &script.join("\n")])
        .current_dir(dir.path())
        .env_clear()
        .envs(env)
        .env("PATH", &path)
        .env("PORT", port.to_string())
        .env("MCP_PORT", mcp_port.to_string())
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .process_group(0)
        .spawn()
        .unwrap();
    let mut walk = Group(child);
    let deadline = Instant::now() + LIMIT;
    let status = loop {
        if let Some(status) = walk.0.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the steps took over {LIMIT:?}\n{}", logs(dir.path()));
        std::thread::sleep(Duration::from_millis(100));
    };
    let out = std::fs::read_to_string(dir.path().join("out.txt")).unwrap();
    assert!(status.success(), "{status}\n{}", logs(dir.path()));

    // doctor: all ok but the one warning the README announces.
    assert!(out.contains("doctor: ") && out.contains(" ok, 1 warn, 0 fail"), "{out}");
    let group = out
        .lines()
        .find_map(|l| l.strip_prefix("ok    group ")?.split(':').next())
        .unwrap_or_else(|| panic!("doctor checked no group:\n{out}"))
        .to_string();
    // The SDK script's three calls, each answered without error.
    for tool in ["whitelist_add: ", "whitelist_list: ", "whitelist_remove: "] {
        assert!(out.contains(tool), "{tool} missing:\n{}", logs(dir.path()));
    }

    // The desktop client's entry, run as a desktop client would, against the same serve.
    let config: Value = serde_json::from_str(&desktop.text).expect("the desktop config is JSON");
    let entry = &config["mcpServers"]["awswhitelist"];
    assert_eq!(entry["command"], "awswhitelist", "{entry}");
    let url = entry["env"]["MCP_REMOTE_URL"].as_str().expect("MCP_REMOTE_URL");
    assert_eq!(url, "http://127.0.0.1:8080/mcp", "the README's default port");
    let args: Vec<&str> = entry["args"].as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
    let answer = desktop_call(
        &bin_dir.join("awswhitelist"),
        &args,
        &url.replace("8080", &mcp_port.to_string()),
        &group,
    );
    assert_ne!(answer["result"]["isError"], true, "{answer}");
    assert!(answer["result"]["structuredContent"].is_object(), "{answer}");
}

/// One `whitelist_list` through the desktop entry's command (`proxy`), over its stdin/stdout.
fn desktop_call(program: &Path, args: &[&str], url: &str, group: &str) -> Value {
    let mut child = Command::new(program)
        .args(args)
        .env_clear()
        .env("MCP_REMOTE_URL", url)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let answer = common::list_over_stdio(&mut child, group);
    let _ = child.wait();
    answer.unwrap_or(Value::Null)
}

/// What the steps printed, and the logs of moto and serve, for a failure message.
fn logs(dir: &Path) -> String {
    ["out.txt", "err.txt", "moto.log", "serve.log"]
        .iter()
        .map(|f| format!("--- {f}\n{}", std::fs::read_to_string(dir.join(f)).unwrap_or_default()))
        .collect()
}
