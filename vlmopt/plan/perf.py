"""Performance model: latency percentiles as a function of load, and capacity at the SLO, for one replica.

Two sources, in order of preference:
1. measured: a `vlmopt benchmark` profile of the same variant on the same device (and GPU slice). Capacity is the
   highest measured request throughput whose load point met every SLO key (no interpolation beyond measured points).
2. estimated: the model below, with its engine overheads and roofline efficiencies fitted to whatever measured
   profiles exist (`fit_efficiency`), its host costs measured by the benchmark (`HostCosts`), priors otherwise.

The model (docs/cost-model.md#the-performance-model has the sources and the validation):

Host, in vLLM's API server process(es) (`HostCosts`): per request `request_s` (HTTP/JSON, chat template,
tokenisation), `image_s` per image (fetch, decode, the model's own processor) before the engine sees it, and
`output_token_s` per streamed token (detokenise, SSE). vLLM runs multimodal preprocessing on one thread per API
server, so the API servers cap the request rate at api_server_count / (their CPU seconds per request) whatever the
accelerator does; below the cap a request waits for them as in an M/M/c queue.

Engine, one step at a time (continuous batching with chunked prefill):
- a decode step with b running sequences takes t_dec(b) = step_s + step_seq_s x b + max(weights + b x context x
  KV bytes per token over the share's bandwidth x bandwidth efficiency, 2 x LM params x b over its FLOPS x compute
  efficiency): engine overheads (scheduler, input preparation, sampling: `Efficiency.step_s`, `step_seq_s`) plus the
  roofline;
- prefill and vision encoding are work G per request: `Efficiency.request_s` (admission) + (2 x LM params x prompt
  tokens + the quadratic attention term + 2 x vision params x encoder patches + the encoder's attention within each
  tile) over FLOPS x compute efficiency. At throughput X they take the share rho = X x G of the engine's time;
- the mean step is t = t_dec(b) / (1 - rho), and each request spends its O-1 decode steps in the batch, so
  b = X (O-1) t (Little's law; closed form in the memory-bound regime);
- TPOT p50 = t; p95 at the batch b + 1.645 sqrt(b) (Poisson spread);
- TTFT = host time before the engine (+ its queue) + the rest of the step in flight when the request arrives (half a
  step, if anything else is running) + its prefill G + one step + the prefill work queued ahead of it (an M/D/1
  queue of utilisation rho, wait quantiles from its exponential tail) + one more step per extra chunk when the
  prompt exceeds the `max_num_batched_tokens` budget left beside the decode batch;
- E2EL = TTFT + (O-1) x TPOT.

Open loop (Poisson arrivals at rate X) is what capacity at the SLO uses: latencies grow with X, so the capacity is
found by bisection. Closed loop (a benchmark's `max_concurrency` N, requests back to back) solves X x E2EL(X) = N
(Little's law) for X; with N clients nothing queues behind more than N - 1 others, so the queueing terms scale by
(N - 1) / N.

A MIG slice gets compute_slices/7 of the FLOPS and memory_slices/8 of the bandwidth ("memory slice ~ 1/8 of memory
(capacity + bandwidth); SM slice ~ 1/7 of SMs", NVIDIA MIG user guide, docs/cost-model.md).

The model lives in one module per job; this module gathers their public names (`perf.predict`, `perf.Capacity`):
- costs.py: ModelCost, RequestShape, DeviceShare, Efficiency, HostCosts and the priors;
- latency.py: the open-loop model (`predict`);
- closed_loop.py: N clients back to back (`predict_closed_loop`);
- capacity.py: capacity at the SLO, estimated (`estimate_capacities`) or measured (`measured_capacity`);
- calibration.py: observations of measured load points and `fit_efficiency`.
"""

from __future__ import annotations

from .calibration import (
    FIT_METRICS,
    Observation,
    calibration_fields,
    fit_efficiency,
    latency_mape,
    observations_from_profile,
    predict_observation,
)
from .capacity import (
    HOST_BINDING_MARGIN,
    SLO_KEYS,
    SLO_TO_LOADPOINT,
    Capacity,
    CapacityQuery,
    estimate_capacities,
    estimate_capacity,
    load_point_value,
    measured_capacity,
)
from .closed_loop import predict_closed_loop
from .costs import (
    NO_HOST,
    PRIOR_BANDWIDTH_EFFICIENCY,
    PRIOR_COMPUTE_EFFICIENCY,
    PRIOR_ENGINE_REQUEST_S,
    PRIOR_HOST_OUTPUT_TOKEN_S,
    PRIOR_HOST_REQUEST_S,
    PRIOR_STEP_S,
    PRIOR_STEP_SEQ_S,
    DeviceShare,
    Efficiency,
    HostCosts,
    ModelCost,
    RequestShape,
    decode_step_seconds,
    device_share,
    prefill_seconds,
)
from .latency import Z_95, Prediction, meets, predict

__all__ = [
    "FIT_METRICS", "HOST_BINDING_MARGIN", "NO_HOST", "PRIOR_BANDWIDTH_EFFICIENCY", "PRIOR_COMPUTE_EFFICIENCY",
    "PRIOR_ENGINE_REQUEST_S", "PRIOR_HOST_OUTPUT_TOKEN_S", "PRIOR_HOST_REQUEST_S", "PRIOR_STEP_S", "PRIOR_STEP_SEQ_S",
    "SLO_KEYS", "SLO_TO_LOADPOINT", "Z_95", "Capacity", "CapacityQuery", "DeviceShare", "Efficiency", "HostCosts",
    "ModelCost", "Observation", "Prediction", "RequestShape", "calibration_fields", "decode_step_seconds",
    "device_share", "estimate_capacities", "estimate_capacity", "fit_efficiency", "latency_mape", "load_point_value",
    "measured_capacity", "meets", "observations_from_profile", "predict", "predict_closed_loop",
    "predict_observation", "prefill_seconds",
]
