//! The Kubernetes manifests in `deploy/kubernetes` are valid for the
//! Kubernetes API (checked offline against its schemas by
//! `kubernetes-validate`, from PyPI), and the gateway config they mount is
//! one `warden check` accepts.

use std::{path::PathBuf, process::Command};

use e2e::{Scratch, bin, peers, root};

fn manifests() -> Vec<PathBuf> {
    let dir = root().join("deploy/kubernetes");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    files
}

fn validate(files: &[PathBuf]) -> std::process::Output {
    Command::new(peers().join("venv/bin/kubernetes-validate"))
        .args(["--strict", "--quiet", "--no-warn"])
        .args(files)
        .output()
        .expect("kubernetes-validate runs (cargo xtask peers installs it)")
}

#[test]
fn the_manifests_are_valid_kubernetes_objects() {
    let files = manifests();
    let names: Vec<String> = files.iter().map(|f| f.file_name().unwrap().to_string_lossy().into_owned()).collect();
    for expected in ["configmap.yaml", "deployment.yaml", "pdb.yaml", "redis.yaml", "secret.yaml", "service.yaml"] {
        assert!(names.iter().any(|n| n == expected), "{expected} is missing from deploy/kubernetes");
    }
    let output = validate(&files);
    assert!(
        output.status.success(),
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );

    // The validator is not vacuous: a wrong type is refused.
    let broken = Scratch::new("manifest");
    let file = broken.path().join("deployment.yaml");
    let text = std::fs::read_to_string(root().join("deploy/kubernetes/deployment.yaml")).unwrap();
    std::fs::write(&file, text.replace("replicas: 3", "replicas: three")).unwrap();
    assert!(!validate(&[file]).status.success(), "a string replica count is refused");
}

#[test]
fn the_mounted_config_is_one_the_gateway_accepts() {
    let dir = Scratch::new("configmap");
    // The ConfigMap's files, as the pod sees them in /etc/warden (PyYAML
    // comes with kubernetes-validate).
    let extract = "import sys, yaml\n\
                   m = yaml.safe_load(open(sys.argv[1]))\n\
                   assert m['kind'] == 'ConfigMap'\n\
                   for name, text in m['data'].items():\n    open(sys.argv[2] + '/' + name, 'w').write(text)\n";
    let status = Command::new(peers().join("venv/bin/python"))
        .args(["-c", extract])
        .arg(root().join("deploy/kubernetes/configmap.yaml"))
        .arg(dir.path())
        .status()
        .unwrap();
    assert!(status.success());
    let output = Command::new(bin("warden"))
        .args(["check", "--config"])
        .arg(dir.path().join("warden.toml"))
        .env("WARDEN_REDIS_URL", "redis://:secret@redis.default.svc:6379")
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    // The probes the Deployment names are the admin listener's.
    let deployment = std::fs::read_to_string(root().join("deploy/kubernetes/deployment.yaml")).unwrap();
    assert!(deployment.contains("path: /readyz") && deployment.contains("path: /healthz"));
}
