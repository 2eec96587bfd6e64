"""Host-cost measurement on the real serve env and the shared tiny vLLM server: the model's processor and
tokenizer timed in the serve env, text-only vs image requests one at a time with the API server's CPU per request,
and the per-point CPU accounting of the server's processes."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from vlmopt.bench import host_costs
from vlmopt.bench.client import ChatClient
from vlmopt.bench.process_cpu import ServerCpu, point_fields
from vlmopt.plan.host import host_costs_from_measurement, measured_cpu_spec

pytestmark = pytest.mark.e2e


def test_processor_probe_times_the_models_own_processor(tiny_model_dir: Path, serve_python: Path) -> None:
    probe = host_costs.start_processor_probe(serve_python, tiny_model_dir, [(56, 56)], output_tokens=16,
                                             image_style="photo")
    m = host_costs.measurement_from(probe.result(), None, 0.0, "test")
    assert m.error is None and m.processor == "LlavaProcessor"
    sizes = [(i.width, i.height) for i in m.images]
    assert sizes == [(56, 56), *host_costs.REFERENCE_SIZES]
    # The tiny LLaVA's processor resizes every image to 56x56: 16 patch tokens (+ the template's newline).
    assert all(i.tokens == m.images[0].tokens and i.tokens >= 16 for i in m.images)
    # Decoding a 1024x768 JPEG costs more CPU than a 56x56 one.
    assert m.images[-1].decode_cpu_s > m.images[0].decode_cpu_s > 0
    assert m.tokenize_cpu_s > 0 and m.detokenize_cpu_s_per_token > 0
    assert m.matmul_gflops_bfloat16 > 0 and m.memory_copy_gbs > 0
    spec = measured_cpu_spec(m, "this cpu", 4.0)
    assert spec.tflops["bf16"] == pytest.approx(m.matmul_gflops_bfloat16 / 1e3)


def test_server_probe_and_cpu_accounting(tiny_server) -> None:
    cpu = ServerCpu(tiny_server.pgid)

    async def probe():
        async with ChatClient(tiny_server.base_url, tiny_server.model_name, timeout_s=120, ignore_eos=True,
                              temperature=0.0) as client:
            before = cpu.sample()
            result = await host_costs.probe_server(client, (56, 56), input_tokens=16, output_tokens=8,
                                                   image_style="photo", sizer=None, cpu=cpu)
            return before, result, cpu.sample()

    before, server, after = asyncio.run(probe())
    assert server.text_ttft_ms > 0 and server.image_ttft_ms > 0
    # TPOT of 8 streamed tokens; 0 when a loaded machine delivers them in one burst, never missing.
    assert server.text_tpot_ms is not None and server.image_tpot_ms is not None
    # The API server's own CPU per request: positive, and a 6-request probe cannot take more than a few seconds.
    assert 0 < server.text_api_server_cpu_s < 2 and 0 < server.image_api_server_cpu_s < 2
    fields = point_fields(before, after, completed=6, duration=1.0)
    assert fields["api_server_cpu_s_per_request"] > 0 and fields["engine_cpu_s_per_request"] > 0
    assert 0 <= fields["engine_cpu_wait_share"] < 1
    costs = host_costs_from_measurement(
        host_costs.measurement_from({"tokenize_cpu_s": 1e-4, "images": []}, server, 0.0, "test"), (56, 56))
    assert costs.request_s > 0
