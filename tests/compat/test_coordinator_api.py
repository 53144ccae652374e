"""The seed's module-level coordinator functions, on a process-wide instance."""

from __future__ import annotations

import pytest

from cross_instance import Runtime
from cross_instance.compat import coordinator
from cross_instance.errors import NotRegisteredError


def test_module_level_api(tmp_path, monkeypatch):
    monkeypatch.setenv("PI_RUNTIME_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("PI_INSTANCE_ID", "seed-1")
    assert not coordinator.is_coordinator_initialized()
    with pytest.raises(NotRegisteredError):
        coordinator.get_my_parallel_limit()
    assert coordinator.get_env_overrides()["instanceId"] == "seed-1"
    rt = coordinator.register_instance("session", str(tmp_path), {"totalMaxLlm": 4})
    try:
        assert isinstance(rt, Runtime) and coordinator.register_instance() is rt
        assert coordinator.is_coordinator_initialized()
        assert coordinator.get_total_max_llm() == 4
        assert coordinator.get_active_instance_count() == 1
        assert coordinator.get_my_parallel_limit() == 4
        coordinator.set_active_model("openai", "gpt-4o")
        assert coordinator.get_active_instances_for_model("openai", "gpt-4o") == 1
        assert coordinator.get_model_usage_summary()["models"] == [
            {"provider": "openai", "model": "gpt-4o", "instanceCount": 1}]
        coordinator.clear_all_active_models()
        assert coordinator.check_ul_workflow_ownership("wf")["owned"]
        assert coordinator.ul_workflow_force_claim("wf").action == "owned"
        assert coordinator.release_workflow("wf")
        lock = coordinator.try_acquire_lock("res", 5000)
        assert lock.expires_at - lock.acquired_at == 5000 and lock.lock_id
        assert coordinator.try_acquire_lock("res", 5000) is None
        coordinator.release_lock(lock)
        coordinator.cleanup_expired_locks()
        assert coordinator.try_acquire_lock("res", 5000).token == 2
        coordinator.update_workload_info(3, 120.0)
        coordinator.enhanced_heartbeat()
        assert coordinator.cleanup_dead_instances() == []
        assert coordinator.get_coordinator_status()["myInstanceId"] == "seed-1"
        assert coordinator.matches_model_pattern("gpt-4*", "gpt-4o")
        # work stealing: another instance holds queued tasks; this idle one takes one over
        from tests.helpers_runtime import make_config

        other = Runtime.start(cwd=tmp_path, config=make_config(tmp_path / "state",
                                                               timeout_ms=30_000),
                              instance_id="busy")
        try:
            for i in range(4):
                other.queue.put(i)
            assert coordinator.should_attempt_work_stealing()
            assert coordinator.find_steal_candidate() == "busy"
            assert coordinator.get_work_stealing_candidates(2) == ["busy"]
            assert coordinator.get_work_stealing_summary()["stealableTasks"] == 4
            states = {s["instanceId"]: s for s in coordinator.get_remote_queue_states()}
            assert states["busy"]["pendingTaskCount"] == 4
            task = coordinator.safe_steal_work()
            assert task is not None and task.task.owner == "seed-1"
            task.complete("done")
            assert coordinator.get_stealing_stats()["successfulSteals"] == 1
            coordinator.reset_stealing_stats()
            assert coordinator.get_stealing_stats()["totalAttempts"] == 0
            coordinator.broadcast_queue_state()
            assert coordinator.cleanup_queue_states() == []
        finally:
            other.close()
        with coordinator.subscribe_coordinator_events(on_workflow_released=print) as sub:
            assert sub.running and sub.last_event_id == rt.events.last(1)[-1].event_id
        with pytest.raises(ValueError, match="unknown key"):
            coordinator.unregister_instance()
            coordinator.register_instance(config_overrides={"bogus": 1})
    finally:
        coordinator.unregister_instance()
    assert not coordinator.is_coordinator_initialized()
    assert coordinator.get_coordinator_status()["registered"] is False


def test_module_level_api_names_bad_arguments(tmp_path, monkeypatch):
    from cross_instance.errors import InvalidArgument, LockRequestError

    monkeypatch.setenv("PI_RUNTIME_DIR", str(tmp_path / "state"))
    with pytest.raises(InvalidArgument, match="config_overrides must be a mapping"):
        coordinator.register_instance("s", str(tmp_path), [("totalMaxLlm", 4)])
    with pytest.raises(InvalidArgument, match="totalMaxLlm must be a positive integer"):
        coordinator.register_instance("s", str(tmp_path), {"totalMaxLlm": "4"})
    with pytest.raises(InvalidArgument, match="session_id must be"):
        coordinator.register_instance("a\nb", str(tmp_path))
    coordinator.register_instance("session", str(tmp_path))
    try:
        with pytest.raises(LockRequestError, match="ttl_ms must be a number of milliseconds"):
            coordinator.try_acquire_lock("res", "5000")
        with pytest.raises(LockRequestError, match="lock must be a HeldLock"):
            coordinator.release_lock("res")
        with pytest.raises(InvalidArgument, match="my_pending_tasks must be an integer"):
            coordinator.get_dynamic_parallel_limit(None)
        with pytest.raises(InvalidArgument, match="allow_live must be True or False"):
            coordinator.ul_workflow_force_claim("wf", allow_live="no")
    finally:
        coordinator.unregister_instance()
