"""Runs inside SkyPilot's own environment (it pins click 8.1, so it cannot share vlmopt's): calls SkyPilot's public
Python API and prints one JSON object on its last stdout line. Standard library and `sky` only: vlmopt is not
installed there. Called by vlmopt/campaign/sky.py as `<sky python> sky_bridge.py COMMAND ...`.

Commands:
  clouds                        -> {"clouds": [...]}             sky.client.sdk.enabled_clouds
  launch TASK.yaml NAME         -> {"job_id": N}                 sky.Task.from_yaml_config + sky.jobs.launch
  queue ID [ID ...]             -> {"jobs": [{...}, ...]}        sky.jobs.queue_v2
  logs ID LINES                 -> {"lines": [...]}              sky.jobs.tail_logs
Any exception -> {"error": "<type>: <first line>"} and exit code 1.
"""

from __future__ import annotations

import io
import json
import os
import sys


def _get(request_id):
    import sky

    return sky.get(request_id)


def clouds() -> dict:
    from sky.client import sdk

    return {"clouds": [str(c) for c in _get(sdk.enabled_clouds())]}


def launch(path: str, name: str) -> dict:
    import sky
    import sky.jobs
    import yaml

    with open(path) as fh:
        config = yaml.safe_load(fh)
    # Null secrets are filled from this process's environment, as `sky jobs launch --secret NAME` does.
    secrets = [(k, os.environ[k]) for k, v in (config.get("secrets") or {}).items() if v is None and k in os.environ]
    missing = [k for k, v in (config.get("secrets") or {}).items() if v is None and k not in os.environ]
    if missing:
        config["secrets"] = {k: v for k, v in config["secrets"].items() if k not in missing}
    task = sky.Task.from_yaml_config(config, secrets_overrides=secrets)
    job_ids, _handle = _get(sky.jobs.launch(task, name=name))
    job_id = job_ids[0] if isinstance(job_ids, list) else job_ids
    return {"job_id": job_id, "missing_secrets": missing}


def _plain(value):
    if hasattr(value, "value"):  # enums (ManagedJobStatus)
        return value.value
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


FIELDS = ("job_id", "job_name", "status", "submitted_at", "start_at", "end_at", "job_duration", "recovery_count",
          "failure_reason", "cluster_resources", "region")


def queue(ids: list[str]) -> dict:
    import sky.jobs

    # fields=None: every field (the default set leaves out start_at and failure_reason)
    result = _get(sky.jobs.queue_v2(refresh=False, job_ids=[int(i) for i in ids], all_users=False, fields=None))
    records = result[0] if isinstance(result, tuple) else result
    jobs = []
    for record in records:
        data = record if isinstance(record, dict) else (
            record.model_dump() if hasattr(record, "model_dump") else dict(vars(record)))
        jobs.append({k: _plain(data.get(k)) for k in FIELDS})
    return {"jobs": jobs}


def logs(job_id: str, lines: str) -> dict:
    import sky.jobs

    out = io.StringIO()
    sky.jobs.tail_logs(job_id=int(job_id), follow=False, tail=int(lines), output_stream=out)
    return {"lines": out.getvalue().splitlines()[-int(lines):]}


def main(argv: list[str]) -> int:
    commands = {"clouds": clouds, "launch": launch, "queue": lambda *ids: queue(list(ids)), "logs": logs}
    if not argv or argv[0] not in commands:
        print(json.dumps({"error": f"usage: sky_bridge.py {'|'.join(commands)} ..."}))
        return 2
    try:
        result = commands[argv[0]](*argv[1:])
    except Exception as exc:  # reported as one line by the caller
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        print(json.dumps({"error": f"{type(exc).__name__}: {first}".rstrip(": ")}))
        return 1
    print(json.dumps(result, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
