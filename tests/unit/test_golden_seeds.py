"""Golden tests: each seed recipe's flags and variables appear in what amdfleet renders.

Every assertion cites the seed line it comes from. Where amdfleet deliberately differs
from a seed, the test says so and checks the replacement:
- ``docker run -it`` (seed 002:50) is dropped: an engine service has no TTY.
- the model is vLLM's positional argument (``vllm serve MODEL``), not ``--model``
  (seed 000:31): current ``vllm serve`` rejects ``--model``.
- ``--gpu_memory_utilization`` (seed 002:130) is rendered ``--gpu-memory-utilization``;
  vLLM's argument parser treats ``_`` and ``-`` alike.
- ``HF_TOKEN`` (seed 000:27, 002:60) is not given to the engine at all: the ModelWeights
  download gets it, and the engine serves the staged weights offline.
- the host side of the weights mount is the stack's absolute ``weights.cache_dir``
  (the same path on every node) rather than ``~/.cache/huggingface``.
"""

from __future__ import annotations

import itertools

from amdfleet.config import load_stack_file
from amdfleet.plan import plan
from tests.unit.rendered import env_lines, exec_argv, flag_value, node_file, render_stack

ROCM_DOCKER_FLAGS = [  # seed 000:21-25 and seed 002:52-57
    ("--group-add=video", "000:21, 002:52"),
    ("--cap-add=SYS_PTRACE", "000:22, 002:54"),
    ("--ipc=host", "000:29, 002:53"),
]


def _docker(stack: str, rank: int = 0) -> tuple[list[str], dict[str, str], str]:
    files = render_stack(stack)
    script = node_file(files, rank, "launch.sh")
    return exec_argv(script), env_lines(node_file(files, rank, "engine.env")), script


def _pairs(argv: list[str]) -> list[tuple[str, str]]:
    return list(itertools.pairwise(argv))


def _assert_rocm_container(argv: list[str]) -> None:
    for flag, _line in ROCM_DOCKER_FLAGS:
        assert flag in argv
    pairs = _pairs(argv)
    assert ("--security-opt", "seccomp=unconfined") in pairs  # 000:23, 002:55
    assert ("--device", "/dev/kfd") in pairs  # 000:24, 002:56
    assert ("--device", "/dev/dri") in pairs  # 000:25, 002:57


class TestSeed000Mi325x405bFp8:
    """seeds/000: docker run ... vllm/vllm-openai-rocm:latest on 8x MI325X."""

    def test_docker_flags(self) -> None:
        argv, _, script = _docker("mi325x-llama405b-fp8")
        _assert_rocm_container(argv)
        assert ("-v", "/data/huggingface:/root/.cache/huggingface") in _pairs(argv)  # 000:26
        assert ("-p", "8000:8000") in _pairs(argv)  # 000:28
        assert "vllm/vllm-openai-rocm:latest" in argv  # 000:30
        # 000:27 hands HF_TOKEN to the container, which downloads the checkpoint; here
        # the ModelWeights download gets the token and the engine serves offline.
        assert "HF_TOKEN" not in script
        deployment = plan(load_stack_file("mi325x-llama405b-fp8").spec)
        assert deployment.weights.hf_token_secret == "hfToken"
        assert deployment.head.env["HF_HUB_OFFLINE"] == "1"

    def test_engine_flags(self) -> None:
        argv, _, _ = _docker("mi325x-llama405b-fp8")
        image = argv.index("vllm/vllm-openai-rocm:latest")
        assert argv[image + 1 : image + 3] == [
            "serve",
            "meta-llama/Llama-3.1-405B-Instruct",
        ]  # 000:31
        assert flag_value(argv, "--tensor-parallel-size") == "8"  # 000:32
        assert flag_value(argv, "--quantization") == "fp8"  # 000:33
        assert flag_value(argv, "--kv-cache-dtype") == "fp8"  # 000:34
        assert flag_value(argv, "--max-model-len") == "32768"  # 000:35
        assert flag_value(argv, "--port") == "8000"  # 000:28


class TestSeed001Mi300x405b:
    """seeds/001: dstack's SSH fleet on Hot Aisle, vLLM and TGI on 8x MI300X."""

    def test_ssh_fleet(self) -> None:
        for stack in ("mi300x-llama405b-vllm", "mi300x-llama405b-tgi"):
            host = load_stack_file(stack).spec.fleet.hosts[0]
            assert host.user == "hotaisle"  # 001:172
            assert host.key_path == "~/.ssh/hotaisle_id_rsa"  # 001:173
            assert (host.address, host.port) == ("ssh.hotaisle.cloud", 22013)  # 001:176-177

    def test_tgi_image_and_shards(self) -> None:
        argv, _, _ = _docker("mi300x-llama405b-tgi")
        _assert_rocm_container(argv)
        image = "ghcr.io/huggingface/text-generation-inference:sha-11d7af7-rocm"  # 001:231
        assert argv[argv.index("--entrypoint") + 2] == image
        assert flag_value(argv, "--num-shard") == "8"  # 001:155 (8x MI300X)
        assert flag_value(argv, "--model-id") == "meta-llama/Llama-3.1-405B-Instruct"
        assert "--api-key" not in argv  # TGI reads API_KEY from secrets.env
        assert ': "${API_KEY:?' in node_file(render_stack("mi300x-llama405b-tgi"), 0, "launch.sh")

    def test_vllm_tp8(self) -> None:
        argv, _, _ = _docker("mi300x-llama405b-vllm")
        assert flag_value(argv, "--tensor-parallel-size") == "8"  # 001:155 (8x MI300X)

    def test_rps_sweep(self) -> None:
        """001:271-272: 30 requests at 1 RPS, 60 at 2 ... 150 at 5, 1,000-token prompts."""
        spec = load_stack_file("mi300x-llama405b-vllm").spec.verification
        rps = [s for s in spec.scenarios if s.request_rate]
        assert [(s.request_rate, s.num_prompts, s.input_len) for s in rps] == [
            (r, 30 * r, 1000) for r in (1, 2, 3, 4, 5)
        ]


class TestSeed002Mi355x70b:
    """seeds/002: Llama 3.3 70B FP8 and MXFP4 on one MI355X."""

    def test_container(self) -> None:
        argv, env, _ = _docker("mi355x-llama70b")
        _assert_rocm_container(argv)
        assert "--network=host" in argv  # 002:51
        assert ("-v", "/data/huggingface:/app/models") in _pairs(argv)  # 002:58
        assert env["HF_HOME"] == "/app/models"  # 002:59
        # 002:60 passes HF_TOKEN, but 002:22 says the amd/ weights need no token: none asked.
        assert "HF_TOKEN" not in env

    def test_image_build(self) -> None:
        dockerfile = render_stack("mi355x-llama70b")["image/Dockerfile.gfx950"].content
        assert "FROM rocm/vllm-dev:nightly" in dockerfile  # 002:41, 61
        assert "pip uninstall -y aiter vllm" in dockerfile  # 002:76
        assert "https://github.com/ROCm/aiter.git" in dockerfile  # 002:78
        assert "ARG AITER_REF=dev/perf" in dockerfile  # 002:80
        assert "git submodule sync && git submodule update --init --recursive" in dockerfile  # 81
        assert "python3 setup.py install" in dockerfile  # 002:82
        assert "https://github.com/vllm-project/vllm.git" in dockerfile  # 002:88
        assert 'PYTORCH_ROCM_ARCH="gfx950" python3 setup.py develop' in dockerfile  # 002:90

    def test_fp8_env(self) -> None:
        _, env, _ = _docker("mi355x-llama70b")
        assert env["SAFETENSORS_FAST_GPU"] == "1"  # 002:117
        assert env["VLLM_ROCM_USE_AITER"] == "1"  # 002:118
        assert env["VLLM_USE_V1"] == "1"  # 002:119
        assert env["NCCL_DEBUG"] == "WARN"  # 002:120
        assert env["VLLM_RPC_TIMEOUT"] == "1800000"  # 002:121
        assert "VLLM_ROCM_USE_AITER_FP4_ASM_GEMM" not in env

    def test_fp8_flags(self) -> None:
        argv, _, _ = _docker("mi355x-llama70b")
        serve = argv.index("serve")
        assert argv[serve + 1] == "amd/Llama-3.3-70B-Instruct-FP8-KV"  # 002:123
        assert flag_value(argv, "--tensor-parallel-size") == "1"  # 002:124
        assert flag_value(argv, "--max-num-batched-tokens") == "32768"  # 002:125
        assert flag_value(argv, "--port") == "8000"  # 002:126
        for flag in (
            "--trust-remote-code",  # 002:127
            "--no-enable-prefix-caching",  # 002:128
            "--disable-log-requests",  # 002:129
            "--async-scheduling",  # 002:131
        ):
            assert flag in argv
        assert flag_value(argv, "--gpu-memory-utilization") == "0.9"  # 002:130
        assert flag_value(argv, "--load-format") == "safetensors"  # 002:132
        assert flag_value(argv, "--compilation-config") == (  # 002:133
            '{"cudagraph_mode":"FULL_AND_PIECEWISE", "custom_ops": '
            '["-rms_norm", "-quant_fp8", "-silu_and_mul"]}'
        )
        assert flag_value(argv, "--kv-cache-dtype") == "fp8"  # 002:134

    def test_mxfp4_twin(self) -> None:
        argv, env, _ = _docker("mi355x-llama70b-mxfp4")
        assert env["VLLM_ROCM_USE_AITER_FP4_ASM_GEMM"] == "1"  # 002:144
        for key in ("SAFETENSORS_FAST_GPU", "VLLM_ROCM_USE_AITER", "VLLM_USE_V1"):  # 002:139-141
            assert env[key] == "1"
        assert argv[argv.index("serve") + 1] == "amd/Llama-3.3-70B-Instruct-MXFP4-Preview"  # 146
        assert flag_value(argv, "--compilation-config") == '{"cudagraph_mode":"FULL_AND_PIECEWISE"}'
        assert argv.count("--compilation-config") == 1  # 002:156 replaces the FP8 fusions
        assert flag_value(argv, "--kv-cache-dtype") == "fp8"  # 002:157
        assert flag_value(argv, "--max-num-batched-tokens") == "32768"  # 002:148

    def test_benchmark_and_accuracy(self) -> None:
        spec = load_stack_file("mi355x-llama70b").spec.verification
        (scenario,) = spec.scenarios
        assert scenario.dataset == "random"  # 002:245
        assert (scenario.input_len, scenario.output_len) == (8192, 1024)  # 002:233-234
        assert scenario.max_concurrency == 64  # 002:235
        assert scenario.num_prompts == 128  # 002:236
        assert scenario.ignore_eos and scenario.seed == 123  # 002:251-252
        assert spec.accuracy is not None
        assert (spec.accuracy.task, spec.accuracy.num_fewshot) == ("gsm8k", 5)  # 002:202
        assert spec.accuracy.concurrency == 100  # 002:204 --batch_size 100


class TestSeed003SGLang405b:
    """seeds/003: SGLang's Llama 3.1 cookbook, AMD section."""

    def test_flags(self) -> None:
        argv, _, _ = _docker("mi300x-llama405b-sglang")
        _assert_rocm_container(argv)
        assert flag_value(argv, "--model-path") == "meta-llama/Llama-3.1-405B-Instruct"  # 003:38
        assert flag_value(argv, "--tp") == "8"  # 003:39, verified TP for 405B BF16 (003:25)
        assert flag_value(argv, "--tool-call-parser") == "llama3"  # 003:98
        # the key is read from a YAML file the launch script writes, never from argv
        assert "--api-key" not in argv
        config = "/opt/amdfleet/mi300x-llama405b-sglang/engine-secrets.yaml"
        assert flag_value(argv, "--config") == config

    def test_accuracy_and_benchmarks(self) -> None:
        spec = load_stack_file("mi300x-llama405b-sglang").spec.verification
        assert spec.accuracy is not None and spec.accuracy.limit == 200  # 003:492
        shapes = [(s.num_prompts, s.max_concurrency) for s in spec.scenarios]
        assert shapes == [(10, 1), (80, 16), (500, 100)]  # 003:222-223, 268-269, 314-315
        assert {(s.input_len, s.output_len) for s in spec.scenarios} == {(1000, 1000)}  # 003:220


class TestSeed004TwoNode405b:
    """seeds/004: 405B BF16 with pipeline parallelism across two nodes."""

    def test_pp2_tp8_on_both_nodes(self) -> None:
        for rank in (0, 1):
            argv, env, script = _docker("mi300x-2node-llama405b-bf16", rank)
            assert flag_value(argv, "--tensor-parallel-size") == "8"  # 004:552
            assert flag_value(argv, "--pipeline-parallel-size") == "2"  # 004:552
            assert flag_value(argv, "--nnodes") == "2"
            assert flag_value(argv, "--node-rank") == str(rank)
            assert flag_value(argv, "--master-addr") == "10.10.0.1"
            assert ("--headless" in argv) is (rank == 1)
            assert "--network=host" in argv
            # The socket interfaces come from each host's facts at deploy time (cluster.env,
            # written by the cluster check), not from the stack: the launch script loads it.
            assert "GLOO_SOCKET_IFNAME" not in env and "NCCL_SOCKET_IFNAME" not in env
            assert 'load_env "$here/cluster.env"' in script
            assert '--env-file "$here/engine.env" "${cluster_env[@]}"' in script
            assert env["VLLM_HOST_IP"] == f"10.10.0.{rank + 1}"

    def test_workload(self) -> None:
        (scenario,) = load_stack_file("mi300x-2node-llama405b-bf16").spec.verification.scenarios
        assert (scenario.input_len, scenario.output_len) == (1024, 128)  # 004:538
