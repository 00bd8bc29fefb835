//! ptp + host-local + edgeway (+ portmap) at 0.3.1, from `conflist/10-ptp-calico-style.conflist`:
//! the layout of Calico-style chains, where DEL comes without prevResult.

use edgeway_integration_tests::world::{sandbox_ipv4, World};

#[test]
fn ptp_chain_0_3_1_add_and_del() {
    let w = World::with_agent();
    let list = w.ptp_conflist();
    assert_eq!(list["cniVersion"], "0.3.1", "the example is a 0.3.1 list");
    let pod = w.pod(1);
    let c = &pod.container;

    let added = w
        .runner()
        .add(&list, c)
        .unwrap_or_else(|f| panic!("ADD: {f}"));
    let ptp_out = added.of("ptp").json();
    assert_eq!(ptp_out["cniVersion"], "0.3.1");
    assert_eq!(
        added.of("edgeway").json(),
        ptp_out,
        "edgeway must pass the ptp result on unchanged"
    );
    let ip = sandbox_ipv4(&ptp_out, "eth0");
    w.assert_attached(&pod, &ip);
    // ptp routes the pod's /32 to its host veth in the node namespace; edgeway's rule sits
    // beside it and leaves it alone.
    let routes = w.ip_in_node(&["route", "show", &ip]);
    assert!(routes.contains(&ip), "ptp host route for {ip}: {routes:?}");

    let del = w
        .runner()
        .del(&list, c, Some(&added.result()))
        .unwrap_or_else(|f| panic!("DEL: {f}"));
    assert!(
        del.of("edgeway").stdin.get("prevResult").is_none(),
        "libcni sends no prevResult on DEL below 0.4.0"
    );
    w.assert_detached(&pod, &ip);
    w.assert_nothing_left();
}
