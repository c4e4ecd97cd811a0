use super::*;

#[test]
fn iperf2_reports_are_read() {
    // iperf 2.1.8 -e, client and server, as seen on this machine.
    let client = "[  1] 0.0000-1.0000 sec  62.5 MBytes   524 Mbits/sec  46815/0    46816 pps\n\
                  [  1] Sent 46817 datagrams\n";
    assert_eq!(iperf2_sent(client), Some(46817));
    let server = "[  1] 0.0000-1.0002 sec  62.5 MBytes   524 Mbits/sec   0.000 ms 12/46816 (0.026%) \
                  0.002/0.001/0.062/0.001 ms 46805 pps 46816/0(0) pkts 35089137";
    assert_eq!(iperf2_lost_total(server), Some((12, 46816)));
    // Not a report: the interval header, and the packets column alone.
    assert_eq!(
        iperf2_lost_total("[ ID] Interval Transfer Lost/Total Datagrams"),
        None
    );
    assert_eq!(iperf2_lost_total("46816/0(0) pkts"), None);
    assert_eq!(iperf2_sent("Server listening on UDP port 5001"), None);
}

#[test]
fn cpus_parse() {
    assert_eq!(parse_cpus("0,1"), Ok(Cpus::Pinned { send: 0, recv: 1 }));
    assert_eq!(parse_cpus("none"), Ok(Cpus::Free));
    assert!(parse_cpus("0").is_err());
    assert!(parse_cpus("a,b").is_err());
    assert!(parse_cpus("0,99999").is_err());
}
