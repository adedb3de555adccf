"""Desired vs actual -> registrations and deregistrations, as plain data."""

from __future__ import annotations

from registrar.desired import ContainerState, desired_state, from_summary, removed
from registrar.model import Service
from registrar.reconcile import Actual, owned, plan, same

ALWAYS, ON_SUCCESS = "always", "on-success"


def service(sid="node1:web:80", name="web", container="aaaaaaaaaaaa", cname="web", port=32768, tags=()):
    return Service(id=sid, name=name, address="10.0.0.1", port=port, tags=tuple(tags),
                   meta=(("registrar-container", container), ("registrar-host", "node1")),
                   container_id=container, container_name=cname)


def running(*services, cid="aaaaaaaaaaaa", name="web"):
    return ContainerState(cid, name, True, services=tuple(services))


def test_missing_service_is_registered():
    s = service()
    steps = plan(desired_state([running(s)]), {}, cleanup=False)
    assert steps.register == (s,) and steps.deregister == ()


def test_unchanged_service_is_not_registered_again():
    s = service()
    steps = plan(desired_state([running(s)]), {s.id: Actual.from_service(s)}, cleanup=False)
    assert not steps


def test_unchanged_service_read_back_from_the_agent_compares_equal():
    s = service(tags=("a", "b"))
    payload = s.payload()
    agent_entry = {"ID": payload["ID"], "Service": payload["Name"], "Address": payload["Address"],
                   "Port": payload["Port"], "Tags": payload["Tags"], "Meta": payload["Meta"],
                   "Weights": {"Passing": 1, "Warning": 1}, "EnableTagOverride": False}
    assert same(s, Actual.from_agent(agent_entry))
    assert owned({s.id: agent_entry}, "node1") == {s.id: Actual.from_service(s)}


def test_changed_tags_port_or_hash_cause_re_registration():
    s = service()
    for actual in (service(tags=("x",)), service(port=1)):
        assert plan(desired_state([running(s)]), {s.id: Actual.from_service(actual)}, cleanup=False).register == (s,)
    tampered = Actual.from_service(s)
    tampered = Actual(tampered.id, tampered.name, tampered.address, tampered.port, tampered.tags,
                      tuple((k, "0" * 16 if k == "registrar-hash" else v) for k, v in tampered.meta))
    assert plan(desired_state([running(s)]), {s.id: tampered}, cleanup=False).register == (s,)


def test_services_of_other_hosts_and_hand_made_services_are_not_owned():
    entries = {"a": {"ID": "a", "Service": "a", "Meta": {"registrar-host": "node2"}},
               "b": {"ID": "b", "Service": "b", "Meta": {}}, "c": {"ID": "c", "Service": "c"},
               "d": {"ID": "d", "Service": "d", "Meta": {"registrar-host": "node1"}}}
    assert list(owned(entries, "node1")) == ["d"]


def test_stopped_container_services_are_deregistered():
    s = service()
    stopped = ContainerState("aaaaaaaaaaaa", "web", False, exit_code=0)
    steps = plan(desired_state([stopped]), {s.id: Actual.from_service(s)}, cleanup=False)
    assert [(d.id, d.reason) for d in steps.deregister] == [(s.id, "container web stopped")]


def test_on_success_keeps_services_of_containers_that_exited_non_zero():
    s = service()
    actual = {s.id: Actual.from_service(s)}
    crashed = ContainerState("aaaaaaaaaaaa", "web", False, exit_code=3)
    assert not plan(desired_state([crashed], ON_SUCCESS), actual, cleanup=True)
    assert plan(desired_state([crashed], ALWAYS), actual, cleanup=False).deregister
    clean_exit = ContainerState("aaaaaaaaaaaa", "web", False, exit_code=0)
    assert plan(desired_state([clean_exit], ON_SUCCESS), actual, cleanup=False).deregister


def test_on_success_counts_an_exit_by_signal_as_success_as_registrator_does():
    s = service()
    actual = {s.id: Actual.from_service(s)}
    for code in (137, 143, 130):  # docker kill, docker stop, SIGINT
        stopped = ContainerState("aaaaaaaaaaaa", "web", False, exit_code=code)
        assert plan(desired_state([stopped], ON_SUCCESS), actual, cleanup=False).deregister, code


def test_removed_container_is_cleaned_without_cleanup_flag():
    s = service()
    steps = plan(desired_state([removed("aaaaaaaaaaaa" + "f" * 52, "web")], ON_SUCCESS),
                 {s.id: Actual.from_service(s)}, cleanup=False)
    assert [d.reason for d in steps.deregister] == ["container web removed"]


def test_service_of_a_container_docker_does_not_know_needs_cleanup():
    s = service()
    actual = {s.id: Actual.from_service(s)}
    steps = plan(desired_state([]), actual, cleanup=False)
    assert not steps and steps.left == (s.id,)
    steps = plan(desired_state([]), actual, cleanup=True)
    assert [d.reason for d in steps.deregister] == ["container gone (--cleanup)"]


def test_running_container_that_no_longer_wants_a_service_loses_it():
    old = service(sid="node1:web:8080")
    steps = plan(desired_state([running(service())]), {old.id: Actual.from_service(old)}, cleanup=False)
    assert [s.id for s in steps.register] == ["node1:web:80"]
    assert [d.id for d in steps.deregister] == ["node1:web:8080"]


def test_duplicate_service_ids_go_to_the_container_whose_name_sorts_first():
    first = service(sid="shared", container="bbbbbbbbbbbb", cname="alpha")
    second = service(sid="shared", container="aaaaaaaaaaaa", cname="beta")
    desired = desired_state([running(second, cid="aaaaaaaaaaaa", name="beta"),
                             running(first, cid="bbbbbbbbbbbb", name="alpha")])
    assert desired.services["shared"].container_name == "alpha"
    assert any("already used by container alpha" in w for w in desired.warnings)


def test_summary_of_an_exited_container_gives_its_exit_code():
    state = from_summary({"Id": "c" * 64, "Names": ["/job"], "State": "exited", "Status": "Exited (137) 2 hours ago"})
    assert (state.id, state.name, state.running, state.exit_code) == ("cccccccccccc", "job", False, 137)
    assert from_summary({"Id": "d" * 64, "Names": ["/new"], "State": "created", "Status": "Created"}).exit_code is None
