"""Merging the replicas' Prometheus pages: one header per family, every sample labelled
with its replica, and the result parses with the series of both replicas."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from server.ray.metrics import merge_pages, with_replica

PAGE = """# HELP dvn_requests_total Requests.
# TYPE dvn_requests_total counter
dvn_requests_total{task="digits",outcome="ok"} 3.0
# HELP dvn_inflight Requests in flight.
# TYPE dvn_inflight gauge
dvn_inflight 1.0
"""


def test_with_replica_labels_first() -> None:
    assert with_replica('x_total{a="b"} 1.0', "r1") == 'x_total{replica="r1",a="b"} 1.0'
    assert with_replica("x 2.0", "r1") == 'x{replica="r1"} 2.0'
    assert with_replica("x{} 2.0", "r1") == 'x{replica="r1"} 2.0'


def test_merge_pages_one_family_header_every_replica_sample() -> None:
    text = merge_pages({"b": PAGE.replace("3.0", "5.0"), "a": PAGE})
    assert text.count("# TYPE dvn_requests_total counter") == 1
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    key = (("outcome", "ok"), ("replica", "{}"), ("task", "digits"))
    assert samples[("dvn_requests_total", tuple(sorted((k, v.format("a")) for k, v in key)))] == 3.0
    assert samples[("dvn_requests_total", tuple(sorted((k, v.format("b")) for k, v in key)))] == 5.0
    assert samples[("dvn_inflight", (("replica", "a"),))] == 1.0
    assert samples[("dvn_inflight", (("replica", "b"),))] == 1.0
