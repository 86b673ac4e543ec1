//! A bearer token as the server checks it: anything but a token this secret signed is refused.
#![no_main]

use converge_core::Authenticator;
use converge_server::JwtAuth;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(bearer) = std::str::from_utf8(data) else { return };
    // The checked-in seeds include tokens signed with this secret, so the claims are read too.
    let auth = JwtAuth::new(b"fuzz-secret");
    if let Ok(scope) = auth.authenticate(bearer) {
        assert!(!scope.tenant.is_empty() && !scope.user.is_empty());
    }
});
