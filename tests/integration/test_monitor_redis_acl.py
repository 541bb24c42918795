"""A Redis user lacking a command the monitor needs is a clear start-up error (exit 3).

A private ``redis-server`` holds ACL users; ``driftline monitor`` runs as a user without
scripting, then without ``HINCRBYFLOAT`` (a command only its Lua script sends), and with
every needed command: the first two stop at start with a message naming the fix, the last
passes the check.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import orjson
import pytest
import redis

from driftline.compile import AssayPlan, DetectorBaseline
from driftline.detectors import Baseline
from driftline.errors import ServiceError
from driftline.expressions import parse
from driftline.streams._engine import PipelineEngine
from driftline.streams._monitor_redis import REDIS_COMMANDS, check_redis
from driftline.streams.state import RedisState

from ._private_redis import PrivateRedis

pytestmark = pytest.mark.integration


@pytest.fixture
def private_redis(tmp_path: Path):  # type: ignore[no-untyped-def]
    server = PrivateRedis(tmp_path)
    server.start()
    admin = redis.Redis(port=server.port)
    admin.acl_setuser("noscript", enabled=True, passwords=["+pw"], keys=["*"],
                      commands=["+@all", "-@scripting"])  # fmt: skip
    admin.acl_setuser("nofloat", enabled=True, passwords=["+pw"], keys=["*"],
                      commands=["+@all", "-hincrbyfloat"])  # fmt: skip
    minimal = ["+" + c.lower() for c in REDIS_COMMANDS]
    admin.acl_setuser("monitor", enabled=True, passwords=["+pw"], keys=["dl:*"], commands=minimal)
    admin.close()
    yield server
    server.stop()


def test_a_user_without_a_needed_command_stops_the_monitor_with_exit_3(  # type: ignore[no-untyped-def]
    private_redis, topic_prefix, tmp_path
):
    env = dict(os.environ, DRIFTLINE_TOPIC_PREFIX=topic_prefix,
               DRIFTLINE_MONITOR_DATADIR=str(tmp_path / "faust"))  # fmt: skip
    for user, missing in (("noscript", "evalsha"), ("nofloat", "hincrbyfloat")):
        env["DRIFTLINE_REDIS_URL"] = f"redis://{user}:pw@127.0.0.1:{private_redis.port}/0"
        proc = subprocess.run(
            [sys.executable, "-m", "driftline", "monitor"],
            env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert proc.returncode == 3, proc.stdout + proc.stderr
        assert "Traceback" not in proc.stderr
        assert "Redis refused the monitor" in proc.stderr
        assert missing in proc.stderr.lower()
        assert "EVALSHA" in proc.stderr and "DRIFTLINE_REDIS_URL" in proc.stderr


def test_the_documented_commands_are_enough(private_redis):  # type: ignore[no-untyped-def]
    client = redis.Redis(port=private_redis.port, username="monitor", password="pw")
    try:
        check_redis(client, "dl")
        with pytest.raises(ServiceError, match="on keys other:"):
            check_redis(client, "other")  # the user's ACL covers dl:* only
        # and the engine runs on them: counts, an MMD sample, marks, cleanup
        state = RedisState(client, "dl", "p")
        base = Baseline.from_values(np.linspace(0, 1, 50))
        assays = [
            AssayPlan(m, parse("m.outputs[0][0]"), DetectorBaseline(base, m, {"auto": 0.01}),
                      1000, 1000, m)
            for m in ("psi", "mmd")
        ]  # fmt: skip
        engine = PipelineEngine("p", "v", ["m"], [], assays, state, 1, 0)
        rows = [
            orjson.dumps(
                {"id": f"r{i}", "time": 1000 * (i // 10) + i, "outputs": {"m": [[i / 30]]}}
            )
            for i in range(30)
        ]
        out = engine.test(rows, floor=3000)
        got = sorted((a.assay, a.window_end) for a in out.assays)
        assert got == [(m, e) for m in ("mmd", "psi") for e in (1000, 2000, 3000)]
        assert state.clear() > 0
    finally:
        client.close()
