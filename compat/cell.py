"""One matrix cell, (scenario, client), in its own process: `python -m compat.cell '<json>'`.

Its own process so the runner can enforce a hard timeout by killing the process group, and every
agent it started dies with it (agents are spawned with a parent-death signal). The last stdout
line is the result: {"status": "PASS"|"FAIL"|"N/A", "reason": ..., "notes": [...], "seconds": ...}.
"""

from __future__ import annotations

import json
import signal
import sys
import tempfile
import time
import traceback
from pathlib import Path

from compat.agent import Agent, AgentTimeout, ClientError, Unsupported
from compat.registry import ClientSpec
from compat.scenarios import SCENARIOS, Ctx, Fail, run_scenario


def own_broker(job: dict, args: tuple[str, ...]):
    """A kbroker for this cell alone (a scenario that stops brokers or injects faults), started
    like the variant's brokers (its listener, --as-version) plus the scenario's arguments."""
    from kbroker.testing import BrokerProcess
    data = Path(tempfile.mkdtemp(prefix=f"cell-{job['prefix'][-40:]}-", dir=job["work_dir"]))
    return BrokerProcess(data, [*job["broker_args"], "--http-port", "0", *args], startup_timeout=30).start()


def run_cell(job: dict) -> dict:
    client = ClientSpec.from_json(job["client"])
    partner = ClientSpec.from_json(job["partner"])
    scenario = SCENARIOS[job["scenario"]]
    log_dir = Path(job["log_dir"])
    log_dir.mkdir(parents=True, exist_ok=True)
    agents: list[Agent] = []
    log_name = f"{job['prefix']}.{client.name}"
    broker = own_broker(job, scenario.broker) if scenario.broker is not None else None
    bootstrap = broker.bootstrap if broker else job["bootstrap"]

    def start_agent(role: str, which: str | None, address: str | None) -> Agent:
        spec = partner if which is not None and which != client.name else client
        agent = Agent(f"{spec.name}/{role}", spec.agent_command(address or bootstrap),
                      {**spec.env, **job.get("security_env", {})}, log_dir / f"{log_name}.{role}.log")
        agents.append(agent)
        return agent

    ctx = Ctx(client=client.name, features=set(job["features"]), start_agent=start_agent,
              bootstrap=bootstrap, strict_bootstrap=job.get("strict_bootstrap"), prefix=job["prefix"],
              partner=partner.name, broker=broker)
    started = time.monotonic()
    try:
        run_scenario(ctx, scenario)
        status, reason = "PASS", ""
    except Unsupported as exc:
        status, reason = "N/A", str(exc)
    except (Fail, ClientError, AgentTimeout) as exc:
        status, reason = "FAIL", str(exc)
    except Exception as exc:  # noqa: BLE001 - a harness bug must show as a failure, not crash the run
        status, reason = "FAIL", f"harness error {type(exc).__name__}: {exc}"
        traceback.print_exc()
    finally:
        for agent in agents:
            agent.close(timeout=5)
        if broker is not None:
            broker.stop()
            (log_dir / f"{log_name}.broker.log").write_text("".join(broker.output))
    return {"status": status, "reason": reason.replace("\n", " "), "notes": ctx.notes,
            "seconds": round(time.monotonic() - started, 1)}


def main() -> None:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    result = run_cell(json.loads(sys.argv[1]))
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
