//! `berth-api`, the public api for portals (SPEC §6). It is the next wave of work: until it is
//! built, the binary says so and exits, rather than pretending to serve.

fn main() {
    eprintln!(
        "berth-api is not built yet: portals call the control plane's deploy API \
         (POST /deploy/jobs with X-DEPLOY-SECRET) until it lands; see docs/spec.md §6"
    );
    std::process::exit(2);
}
