//! Turns what nginx-sys found out about the nginx tree (exported as DEP_NGINX_*) into cfgs and
//! environment for this crate, the same way the `ngx` crate does for itself.
fn main() {
    // The commit shown by the statistics location (X-Nginx-PushStream-Commit).
    let commit = std::process::Command::new("git")
        .args(["rev-parse", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".to_string());
    println!("cargo::rustc-env=PUSH_STREAM_COMMIT={commit}");

    println!("cargo::rerun-if-env-changed=DEP_NGINX_FEATURES_CHECK");
    println!(
        "cargo::rustc-check-cfg=cfg(ngx_feature, values({}))",
        std::env::var("DEP_NGINX_FEATURES_CHECK").unwrap_or_else(|_| "any()".to_string())
    );
    println!("cargo::rerun-if-env-changed=DEP_NGINX_FEATURES");
    if let Ok(features) = std::env::var("DEP_NGINX_FEATURES") {
        for feature in features.split(',').map(str::trim) {
            println!("cargo::rustc-cfg=ngx_feature=\"{feature}\"");
        }
    }
    println!("cargo::rerun-if-env-changed=DEP_NGINX_VERSION_NUMBER");
    println!("cargo::rustc-check-cfg=cfg(nginx1_25_1)");
    if let Ok(version) = std::env::var("DEP_NGINX_VERSION_NUMBER") {
        if version.parse::<u64>().unwrap_or(0) >= 1_025_001 {
            println!("cargo::rustc-cfg=nginx1_25_1");
        }
    }
    // Tests find the nginx binary built by the `vendored` feature here.
    println!("cargo::rerun-if-env-changed=DEP_NGINX_BUILD_DIR");
    if let Ok(build_dir) = std::env::var("DEP_NGINX_BUILD_DIR") {
        println!("cargo::rustc-env=DEP_NGINX_BUILD_DIR={build_dir}");
    }
}
