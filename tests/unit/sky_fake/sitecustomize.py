"""Loaded by SkyPilot's python in the campaign tests (PYTHONPATH): replaces SkyPilot's public API functions that talk
to an API server or a cloud with a scenario from $VLMOPT_FAKE_SKY (JSON), and records every call in
$VLMOPT_FAKE_SKY_LOG. Everything else (the task loader, its schema) is SkyPilot's own."""

import json
import os

if os.environ.get("VLMOPT_FAKE_SKY"):
    import sky
    import sky.jobs
    from sky.client import sdk

    with open(os.environ["VLMOPT_FAKE_SKY"]) as scenario_file:
        scenario = json.load(scenario_file)
    log_path = os.environ["VLMOPT_FAKE_SKY_LOG"]

    def record(entry):
        with open(log_path, "a") as fh:
            fh.write(json.dumps(entry, default=str) + "\n")

    def enabled_clouds(workspace=None, expand=False):
        record({"call": "enabled_clouds"})
        return "req-clouds"

    def launch(task, name=None, pool=None, num_jobs=None, **kwargs):
        config = task.to_yaml_config()
        record({"call": "jobs.launch", "name": name, "task": config,
                "secrets": sorted(task.secrets), "use_spot": sorted({r.use_spot for r in task.resources}),
                "job_recovery": [r.job_recovery for r in task.resources],
                "storage_mounts": {k: {"source": v.source, "mode": v.mode.value}
                                   for k, v in task.storage_mounts.items()}})
        return f"req-launch-{name}"

    def queue_v2(refresh, skip_finished=False, all_users=False, job_ids=None, **kwargs):
        record({"call": "jobs.queue_v2", "job_ids": job_ids, "fields": kwargs.get("fields", "default")})
        return "req-queue"

    def tail_logs(name=None, job_id=None, follow=True, controller=False, refresh=False, tail=None,
                  output_stream=None, **kwargs):
        record({"call": "jobs.tail_logs", "job_id": job_id, "follow": follow, "tail": tail})
        output_stream.write("\n".join(scenario.get("logs", {}).get(str(job_id), [])) + "\n")
        return None

    def get(request_id):
        if request_id == "req-clouds":
            return scenario.get("clouds", [])
        if request_id == "req-queue":
            records = []
            for r in scenario.get("queue", []):
                records.append({**r, "status": sky.jobs.ManagedJobStatus(r["status"])})
            return records, len(records), {}, len(records)
        if request_id.startswith("req-launch-"):
            outcome = scenario.get("launch", {}).get(request_id[len("req-launch-"):], {"job_id": 1})
            if "error" in outcome:
                raise sky.exceptions.ResourcesUnavailableError(outcome["error"])
            return [outcome["job_id"]], None
        raise AssertionError(f"unexpected request {request_id}")

    sdk.enabled_clouds = enabled_clouds
    sky.jobs.launch = launch
    sky.jobs.queue_v2 = queue_v2
    sky.jobs.tail_logs = tail_logs
    sky.get = get
