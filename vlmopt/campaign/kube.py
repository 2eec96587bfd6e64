"""The Kubernetes side of a campaign, through the official client (`pip install 'vlmopt[campaign]'`): check access,
create the campaign's objects, read each Job's state, its pods' times and log tails.

Status is read as the API's own JSON (`_preload_content=False`), so what a message says is what the API server
said, whichever client version is installed. Every failure becomes `EngineError` with one line for the user.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from .engine import EngineError, RunState

# Pod conditions and container states that explain a job that does not progress (kubectl describe shows these).
_WAITING_PROBLEMS = {"ImagePullBackOff", "ErrImagePull", "CreateContainerConfigError", "CreateContainerError",
                     "InvalidImageName", "CrashLoopBackOff"}


def _require_client():
    try:
        import kubernetes  # noqa: F401
    except ImportError:
        raise EngineError("the Kubernetes client is not installed: pip install 'vlmopt[campaign]'") from None


def _api_error(exc: Exception, what: str) -> EngineError:
    status = getattr(exc, "status", None)
    if status is not None:
        try:
            body = json.loads(getattr(exc, "body", "") or "{}")
            detail = body.get("message") or getattr(exc, "reason", "")
        except (ValueError, TypeError):
            detail = getattr(exc, "reason", "")
        if status in (401, 403):
            return EngineError(f"{what}: the API server refused the credentials ({status} {detail})")
        return EngineError(f"{what}: HTTP {status} {detail}".rstrip())
    reason = str(getattr(exc, "reason", None) or exc).splitlines()[0]
    return EngineError(f"{what}: cannot reach the Kubernetes API server ({reason})")


@dataclass
class PodView:
    name: str
    phase: str
    scheduled_at: str | None
    finished_at: str | None
    message: str | None
    disrupted: str | None = None  # DisruptionTarget reason: preemption, eviction, node shutdown
    exit_code: int | None = None


@dataclass
class JobView:
    state: RunState
    started: str | None
    finished: str | None
    message: str
    pods: list[PodView] = field(default_factory=list)


class KubeClient:
    """One cluster (a kubeconfig context). `kubeconfig`/`context` None: the client's defaults ($KUBECONFIG,
    ~/.kube/config, the current context), else the in-cluster service account."""

    def __init__(self, kubeconfig: str | None = None, context: str | None = None) -> None:
        _require_client()
        from kubernetes import client, config

        try:
            self.api = config.new_client_from_config(config_file=kubeconfig, context=context,
                                                     persist_config=False)
            _contexts, active = config.list_kube_config_contexts(config_file=kubeconfig)
            self.context = context or (active or {}).get("name")
        except (config.ConfigException, OSError, TypeError, KeyError) as exc:
            try:
                config.load_incluster_config()
                self.api, self.context = client.ApiClient(), "in-cluster"
            except config.ConfigException:
                where = kubeconfig or "$KUBECONFIG or ~/.kube/config"
                first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                raise EngineError(f"no Kubernetes credentials: {where}: {first}") from None
        self.core = client.CoreV1Api(self.api)
        self.batch = client.BatchV1Api(self.api)
        self.storage = client.StorageV1Api(self.api)

    # -- access -------------------------------------------------------------------------------------------------
    def check_access(self, namespace: str) -> None:
        """One cheap call: an unreachable server or refused credentials fail here, before anything is written."""
        try:
            self.batch.list_namespaced_job(namespace, limit=1, _preload_content=False)
        except Exception as exc:
            if getattr(exc, "status", None) == 404:
                return  # the namespace does not exist yet; submit creates it
            raise _api_error(exc, f"context {self.context}") from None

    def claim_access_modes(self, namespace: str, claim: str) -> list[str]:
        try:
            raw = self.core.read_namespaced_persistent_volume_claim(claim, namespace, _preload_content=False)
        except Exception as exc:
            if getattr(exc, "status", None) == 404:
                raise EngineError(f"results PVC {claim} does not exist in namespace {namespace}; create it (a "
                                  "ReadWriteMany claim) or use a bucket") from None
            raise _api_error(exc, f"reading PVC {claim}") from None
        data = json.loads(raw.data)
        return list(data.get("status", {}).get("accessModes") or data.get("spec", {}).get("accessModes") or [])

    # -- objects ------------------------------------------------------------------------------------------------
    def apply(self, doc: dict[str, Any]) -> str:
        """Create the object; an existing one is kept ('exists'), except the campaign's ConfigMap (replaced)."""
        kind, name = doc["kind"], doc["metadata"]["name"]
        ns = doc["metadata"].get("namespace")
        create = {
            "Namespace": lambda: self.core.create_namespace(doc),
            "ConfigMap": lambda: self.core.create_namespaced_config_map(ns, doc),
            "PersistentVolumeClaim": lambda: self.core.create_namespaced_persistent_volume_claim(ns, doc),
            "StorageClass": lambda: self.storage.create_storage_class(doc),
            "Job": lambda: self.batch.create_namespaced_job(ns, doc),
            "Pod": lambda: self.core.create_namespaced_pod(ns, doc),
        }.get(kind)
        if create is None:
            raise EngineError(f"{kind}/{name}: not an object the campaign creates")
        try:
            created = create()
        except Exception as exc:
            if getattr(exc, "status", None) != 409:
                raise _api_error(exc, f"creating {kind}/{name}") from None
            if kind == "ConfigMap":
                try:
                    self.core.replace_namespaced_config_map(name, ns, doc)
                except Exception as inner:
                    raise _api_error(inner, f"replacing {kind}/{name}") from None
                return "replaced"
            return "exists"
        uid = getattr(getattr(created, "metadata", None), "uid", None)
        return f"created {uid}" if uid else "created"

    def delete_job(self, namespace: str, name: str) -> None:
        try:
            self.batch.delete_namespaced_job(name, namespace, propagation_policy="Background")
        except Exception as exc:
            if getattr(exc, "status", None) != 404:
                raise _api_error(exc, f"deleting Job/{name}") from None

    # -- state --------------------------------------------------------------------------------------------------
    def job(self, namespace: str, name: str) -> JobView:
        try:
            raw = self.batch.read_namespaced_job(name, namespace, _preload_content=False)
        except Exception as exc:
            if getattr(exc, "status", None) == 404:
                return JobView("gone", None, None, f"Job/{name} no longer exists (ttlSecondsAfterFinished, or "
                               "deleted): state from the results folder")
            raise _api_error(exc, f"reading Job/{name}") from None
        job = json.loads(raw.data)
        pods = self._pods(namespace, name)
        return describe_job(job, pods)

    def _pods(self, namespace: str, job: str) -> list[dict[str, Any]]:
        try:
            raw = self.core.list_namespaced_pod(namespace, label_selector=f"batch.kubernetes.io/job-name={job}",
                                                _preload_content=False)
        except Exception as exc:
            raise _api_error(exc, f"listing the pods of Job/{job}") from None
        return list(json.loads(raw.data).get("items") or [])

    def log_tail(self, namespace: str, pod: str, container: str, lines: int) -> list[str]:
        try:
            text = self.core.read_namespaced_pod_log(pod, namespace, container=container, tail_lines=lines)
        except Exception as exc:
            if getattr(exc, "status", None) in (400, 404):
                return []  # the container never started, or the pod is gone
            raise _api_error(exc, f"reading the log of {pod}") from None
        return str(text).splitlines()[-lines:]


def _condition(obj: dict[str, Any], kind: str) -> dict[str, Any] | None:
    for c in obj.get("status", {}).get("conditions") or []:
        if c.get("type") == kind and c.get("status") == "True":
            return c
    return None


def _age(since: str | None) -> str:
    if not since:
        return ""
    try:
        start = datetime.fromisoformat(since.replace("Z", "+00:00"))
    except ValueError:
        return ""
    minutes = int((datetime.now(timezone.utc) - start).total_seconds() // 60)
    if minutes >= 120:
        return f" for {minutes // 60} h"
    return f" for {minutes} min" if minutes >= 1 else ""


def describe_pod(pod: dict[str, Any]) -> PodView:
    status = pod.get("status", {})
    name = pod.get("metadata", {}).get("name", "?")
    phase = status.get("phase", "Unknown")
    scheduled = _condition(pod, "PodScheduled")
    scheduled_at = scheduled.get("lastTransitionTime") if scheduled else None
    states = [*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or [])]
    finished = [s["state"]["terminated"].get("finishedAt") for s in states
                if (s.get("state") or {}).get("terminated")]
    finished_at = max((f for f in finished if f), default=None) if phase in ("Succeeded", "Failed") else None
    disruption = _condition(pod, "DisruptionTarget")
    disrupted = f"{disruption.get('reason', '')}: {disruption.get('message', '')}".strip(": ") if disruption else None
    message = None
    exit_code = None
    for s in status.get("containerStatuses") or []:
        terminated = (s.get("state") or {}).get("terminated") or (s.get("lastState") or {}).get("terminated")
        if s.get("name") == "benchmark" and terminated:
            exit_code = terminated.get("exitCode")
            reason = terminated.get("reason") or ""
            message = f"exit code {exit_code}" + (f" ({reason})" if reason and reason != "Error" else "")
    for s in states:
        waiting = (s.get("state") or {}).get("waiting") or {}
        if waiting.get("reason") in _WAITING_PROBLEMS:
            message = f"{s.get('name')}: {waiting['reason']}: {waiting.get('message', '')}".rstrip(": ")
    if phase == "Pending" and scheduled is None:
        unscheduled = next((c for c in status.get("conditions") or [] if c.get("type") == "PodScheduled"), None)
        if unscheduled is not None:
            message = (f"{unscheduled.get('reason', 'not scheduled')}{_age(unscheduled.get('lastTransitionTime'))}: "
                       f"{unscheduled.get('message', '')}").rstrip(": ")
    if phase == "Failed" and status.get("reason"):
        message = f"{status['reason']}: {status.get('message', '')}".rstrip(": ")
    return PodView(name, phase, scheduled_at, finished_at, message, disrupted, exit_code)


def describe_job(job: dict[str, Any], pod_items: list[dict[str, Any]]) -> JobView:
    """The Job's state in one line: what a user would piece together from `kubectl describe job/pod`."""
    status = job.get("status", {})
    pods = sorted((describe_pod(p) for p in pod_items), key=lambda p: p.scheduled_at or "")
    started = status.get("startTime")
    disruptions = [p for p in pods if p.disrupted]
    note = ""
    if disruptions:
        note = f"; {len(disruptions)} pod(s) preempted or evicted and retried ({disruptions[-1].disrupted})"
    complete = _condition(job, "Complete")
    if complete:
        return JobView("succeeded", started, status.get("completionTime") or complete.get("lastTransitionTime"),
                       "succeeded" + note, pods)
    failed = _condition(job, "Failed")
    if failed:
        reason = failed.get("reason", "Failed")
        last = next((p for p in reversed(pods) if p.message), None)
        detail = {
            "BackoffLimitExceeded": f"every attempt failed ({status.get('failed', '?')} pods)",
            "DeadlineExceeded": "ran past activeDeadlineSeconds (stuck pending, or slower than expected)",
            "PodFailurePolicy": "exit code 2: bad input, not retried",
        }.get(reason, failed.get("message", ""))
        last_text = f"; last pod: {last.message}" if last and last.message else ""
        return JobView("failed", started, failed.get("lastTransitionTime"), f"{reason}: {detail}{last_text}{note}",
                       pods)
    active = [p for p in pods if p.phase in ("Pending", "Running")]
    current = active[-1] if active else None
    if current is None:
        return JobView("pending", started, None, "no pod yet" + note, pods)
    if current.phase == "Pending":
        why = current.message or ("downloading weights / pulling the image" if current.scheduled_at else "waiting")
        return JobView("pending", started, None, f"pod {current.name} pending: {why}{note}", pods)
    return JobView("running", started, None, f"pod {current.name} running{_age(current.scheduled_at)}{note}", pods)


def gpu_seconds(view: JobView, now: datetime | None = None) -> float:
    """Seconds of GPU held by the job's pods: from scheduling (the device plugin hands the GPU to the pod) to the
    last container's end, summed over attempts; a running pod counts up to now."""
    total = 0.0
    now = now or datetime.now(timezone.utc)
    for pod in view.pods:
        if not pod.scheduled_at:
            continue
        start = datetime.fromisoformat(pod.scheduled_at.replace("Z", "+00:00"))
        end = datetime.fromisoformat(pod.finished_at.replace("Z", "+00:00")) if pod.finished_at else now
        total += max(0.0, (end - start).total_seconds())
    return total
