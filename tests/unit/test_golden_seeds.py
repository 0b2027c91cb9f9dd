"""Golden tests: each seed recipe's flags and variables appear in what amdfleet renders.

Every assertion cites the seed line it comes from and quotes it (test_seed_citations.py
checks the quotes). Where amdfleet deliberately differs from a seed, the test says so
and checks the replacement:
- ``docker run -it``, seed 002:50 ("docker run -it --rm"), is dropped: an engine service
  has no TTY.
- the model is vLLM's positional argument (``vllm serve MODEL``), not ``--model`` as in
  seed 000:31 ("--model meta-llama/Llama-3.1-405B-Instruct"): current ``vllm serve``
  rejects ``--model``.
- seed 002:130 ("--gpu_memory_utilization 0.9") is rendered ``--gpu-memory-utilization``;
  vLLM's argument parser treats ``_`` and ``-`` alike.
- ``HF_TOKEN``, seed 000:27, 002:60 ("HF_TOKEN="), is not given to the engine at all: the
  ModelWeights download gets it, and the engine serves the staged weights offline.
- the host side of the weights mount is the stack's absolute ``weights.cache_dir``
  (the same path on every node) rather than ``~/.cache/huggingface``.
"""

from __future__ import annotations

import itertools

from amdfleet import catalog
from amdfleet.config import load_stack_file
from amdfleet.plan import plan
from tests.unit.rendered import env_lines, exec_argv, flag_value, node_file, render_stack

PINNED_VLLM_IMAGE = "vllm/vllm-openai-rocm:v0.32.0"
"""The catalog's vLLM release image (amdfleet/catalog/releases.py)."""

ROCM_DOCKER_FLAGS = [
    "--group-add=video",  # seed 000:21, 002:52 ("--group-add=video")
    "--cap-add=SYS_PTRACE",  # seed 000:22, 002:54 ("--cap-add=SYS_PTRACE")
    "--ipc=host",  # seed 000:29, 002:53 ("--ipc=host")
]


def _docker(stack: str, rank: int = 0) -> tuple[list[str], dict[str, str], str]:
    files = render_stack(stack)
    script = node_file(files, rank, "launch.sh")
    return exec_argv(script), env_lines(node_file(files, rank, "engine.env")), script


def _pairs(argv: list[str]) -> list[tuple[str, str]]:
    return list(itertools.pairwise(argv))


def _assert_rocm_container(argv: list[str]) -> None:
    for flag in ROCM_DOCKER_FLAGS:
        assert flag in argv
    pairs = _pairs(argv)
    # seed 000:23, 002:55 ("--security-opt seccomp=unconfined")
    assert ("--security-opt", "seccomp=unconfined") in pairs
    assert ("--device", "/dev/kfd") in pairs  # seed 000:24, 002:56 ("/dev/kfd")
    assert ("--device", "/dev/dri") in pairs  # seed 000:25, 002:57 ("/dev/dri")


class TestSeed000Mi325x405bFp8:
    """seeds/000: docker run ... vllm/vllm-openai-rocm:latest on 8x MI325X."""

    def test_docker_flags(self) -> None:
        argv, _, script = _docker("mi325x-llama405b-fp8")
        _assert_rocm_container(argv)
        # seed 000:26 ("-v ~/.cache/huggingface:/root/.cache/huggingface")
        assert ("-v", "/data/huggingface:/root/.cache/huggingface") in _pairs(argv)
        assert ("-p", "8000:8000") in _pairs(argv)  # seed 000:28 ("-p 8000:8000")
        # seed 000:30 ("vllm/vllm-openai-rocm:latest") runs a moving tag; the stack runs
        # the same repository at the release the catalog pins (issue 19).
        assert PINNED_VLLM_IMAGE in argv and "vllm/vllm-openai-rocm:latest" not in argv
        # seed 000:27 ("HF_TOKEN=$HF_TOKEN") hands the token to the container, which
        # downloads the checkpoint; here the ModelWeights download gets the token and the
        # engine serves offline.
        assert "HF_TOKEN" not in script
        deployment = plan(load_stack_file("mi325x-llama405b-fp8").spec)
        assert deployment.weights.hf_token_secret == "hfToken"
        assert deployment.head.env["HF_HUB_OFFLINE"] == "1"

    def test_engine_flags(self) -> None:
        argv, _, _ = _docker("mi325x-llama405b-fp8")
        serve = argv.index("serve")
        assert argv[serve + 1] == "meta-llama/Llama-3.1-405B-Instruct"
        # seed 000:31 ("--model meta-llama/Llama-3.1-405B-Instruct")
        # seed 000:32 ("--tensor-parallel-size 8")
        assert flag_value(argv, "--tensor-parallel-size") == "8"
        assert flag_value(argv, "--quantization") == "fp8"  # seed 000:33 ("--quantization fp8")
        assert flag_value(argv, "--kv-cache-dtype") == "fp8"  # seed 000:34 ("--kv-cache-dtype fp8")
        # seed 000:35 ("--max-model-len 32768")
        assert flag_value(argv, "--max-model-len") == "32768"
        assert flag_value(argv, "--port") == "8000"  # seed 000:28 ("-p 8000:8000")


class TestSeed001Mi300x405b:
    """seeds/001: dstack's SSH fleet on Hot Aisle, vLLM and TGI on 8x MI300X."""

    def test_ssh_fleet(self) -> None:
        for stack in ("mi300x-llama405b-vllm", "mi300x-llama405b-tgi"):
            host = load_stack_file(stack).spec.fleet.hosts[0]
            assert host.user == "hotaisle"  # seed 001:45 ("user: hotaisle")
            # seed 001:46 ("identity_file: ~/.ssh/hotaisle_id_rsa")
            assert host.key_path == "~/.ssh/hotaisle_id_rsa"
            # seed 001:49-50 ("hostname: ssh.hotaisle.cloud port: 22013")
            assert (host.address, host.port) == ("ssh.hotaisle.cloud", 22013)

    def test_tgi_image_and_shards(self) -> None:
        argv, _, _ = _docker("mi300x-llama405b-tgi")
        _assert_rocm_container(argv)
        # seed 001:104 ("ghcr.io/huggingface/text-generation-inference:sha-11d7af7-rocm"):
        # the same repository, at the TGI release the catalog pins.
        image = argv[argv.index("--entrypoint") + 2]
        release = catalog.release("tgi", "gfx942")
        assert release is not None and image == release.image
        assert image.startswith("ghcr.io/huggingface/text-generation-inference:")
        assert image.endswith(f"{release.version}-rocm")
        assert flag_value(argv, "--num-shard") == "8"  # seed 001:28 ("GPUs [x8]")
        assert flag_value(argv, "--model-id") == "meta-llama/Llama-3.1-405B-Instruct"
        assert "--api-key" not in argv  # the router gets API_KEY from amdfleet's shim
        script = node_file(render_stack("mi300x-llama405b-tgi"), 0, "launch.sh")
        assert ': "${AMDFLEET_API_KEY:?' in script and "exec text-generation-router" in script

    def test_vllm_tp8(self) -> None:
        argv, _, _ = _docker("mi300x-llama405b-vllm")
        assert flag_value(argv, "--tensor-parallel-size") == "8"  # seed 001:28 ("GPUs [x8]")

    def test_rps_sweep(self) -> None:
        """30 requests at 1 RPS, 60 at 2 ... 150 at 5, 1,000-token prompts:
        seed 001:142-145 ("30 requests at 1 RPS, then increased to 60 requests at 2 RPS")."""
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
        assert "--network=host" in argv  # seed 002:51 ("--network=host")
        # seed 002:58 ("-v <path/to/your/models>:/app/models")
        assert ("-v", "/data/huggingface:/app/models") in _pairs(argv)
        assert env["HF_HOME"] == "/app/models"  # seed 002:59 (`-e HF_HOME="/app/models"`)
        # seed 002:60 ("HF_TOKEN") passes a token, but the amd/ weights need none,
        # seed 002:22 ("No Hugging Face authentication token is required"): none asked.
        assert "HF_TOKEN" not in env

    def test_image_build(self) -> None:
        dockerfile = render_stack("mi355x-llama70b")["image/Dockerfile.gfx950"].content
        # seed 002:41,61 ("rocm/vllm-dev:nightly") builds on a moving tag; the build
        # starts FROM the pinned release image instead.
        assert f"FROM {PINNED_VLLM_IMAGE}" in dockerfile and "nightly" not in dockerfile
        # seed 002:76 ("pip uninstall -y aiter vllm")
        assert "pip uninstall -y aiter vllm" in dockerfile
        # seed 002:78 ("https://github.com/ROCm/aiter.git")
        assert "https://github.com/ROCm/aiter.git" in dockerfile
        # seed 002:80 ("git checkout dev/perf") checks out a branch; the build checks out
        # the catalog's AITER pin (its commit once recorded).
        assert 'git checkout --detach "${AITER_COMMIT}"' in dockerfile
        assert "dev/perf" not in dockerfile
        # seed 002:81 ("git submodule sync && git submodule update --init --recursive")
        assert "git submodule sync && git submodule update --init --recursive" in dockerfile
        assert "python3 setup.py install" in dockerfile  # seed 002:82 ("python3 setup.py install")
        # seed 002:88 ("https://github.com/vllm-project/vllm.git")
        assert "https://github.com/vllm-project/vllm.git" in dockerfile
        # seed 002:90 (`PYTORCH_ROCM_ARCH="gfx950" python3 setup.py develop`)
        assert 'PYTORCH_ROCM_ARCH="gfx950" python3 setup.py develop' in dockerfile

    def test_fp8_env(self) -> None:
        _, env, _ = _docker("mi355x-llama70b")
        assert env["SAFETENSORS_FAST_GPU"] == "1"  # seed 002:117 ("SAFETENSORS_FAST_GPU=1")
        assert env["VLLM_ROCM_USE_AITER"] == "1"  # seed 002:118 ("VLLM_ROCM_USE_AITER=1")
        assert env["NCCL_DEBUG"] == "WARN"  # seed 002:120 ("NCCL_DEBUG=WARN")
        # seed 002:119 ("VLLM_USE_V1=1") and seed 002:121 ("VLLM_RPC_TIMEOUT=1800000") are
        # variables vLLM 0.32 does not read: left out, and the plan says why.
        assert "VLLM_USE_V1" not in env and "VLLM_RPC_TIMEOUT" not in env
        dropped = plan(load_stack_file("mi355x-llama70b").spec).recipe_dropped
        assert any(d.startswith("VLLM_USE_V1=1 (") for d in dropped)
        assert any(d.startswith("VLLM_RPC_TIMEOUT=1800000 (") for d in dropped)
        assert "VLLM_ROCM_USE_AITER_FP4_ASM_GEMM" not in env

    def test_fp8_flags(self) -> None:
        argv, _, _ = _docker("mi355x-llama70b")
        serve = argv.index("serve")
        # seed 002:123 ("amd/Llama-3.3-70B-Instruct-FP8-KV")
        assert argv[serve + 1] == "amd/Llama-3.3-70B-Instruct-FP8-KV"
        # seed 002:124 ("--tensor-parallel-size 1")
        assert flag_value(argv, "--tensor-parallel-size") == "1"
        # seed 002:125 ("--max-num-batched-tokens 32768")
        assert flag_value(argv, "--max-num-batched-tokens") == "32768"
        assert flag_value(argv, "--port") == "8000"  # seed 002:126 ("--port 8000")
        for flag in (
            "--trust-remote-code",  # seed 002:127 ("--trust-remote-code")
            "--no-enable-prefix-caching",  # seed 002:128 ("--no-enable-prefix-caching")
            "--async-scheduling",  # seed 002:131 ("--async-scheduling")
        ):
            assert flag in argv
        # seed 002:129 ("--disable-log-requests"): vLLM 0.32 rejects it at start-up (its
        # request logging is off by default), so the recipe leaves it out.
        assert "--disable-log-requests" not in argv
        # seed 002:130 ("--gpu_memory_utilization 0.9")
        assert flag_value(argv, "--gpu-memory-utilization") == "0.9"
        # seed 002:132 ("--load-format safetensors")
        assert flag_value(argv, "--load-format") == "safetensors"
        # seed 002:133 ("--compilation-config")
        assert flag_value(argv, "--compilation-config") == (
            '{"cudagraph_mode":"FULL_AND_PIECEWISE", "custom_ops": '
            '["-rms_norm", "-quant_fp8", "-silu_and_mul"]}'
        )
        # seed 002:134 ("--kv-cache-dtype fp8")
        assert flag_value(argv, "--kv-cache-dtype") == "fp8"

    def test_mxfp4_twin(self) -> None:
        argv, env, _ = _docker("mi355x-llama70b-mxfp4")
        # seed 002:144 ("VLLM_ROCM_USE_AITER_FP4_ASM_GEMM=1")
        assert env["VLLM_ROCM_USE_AITER_FP4_ASM_GEMM"] == "1"
        for key in ("SAFETENSORS_FAST_GPU", "VLLM_ROCM_USE_AITER"):
            assert env[key] == "1"
        # seed 002:139-141 ("VLLM_USE_V1=1"): a variable vLLM 0.32 ignores, left out
        assert "VLLM_USE_V1" not in env
        # seed 002:146 ("amd/Llama-3.3-70B-Instruct-MXFP4-Preview")
        assert argv[argv.index("serve") + 1] == "amd/Llama-3.3-70B-Instruct-MXFP4-Preview"
        assert flag_value(argv, "--compilation-config") == '{"cudagraph_mode":"FULL_AND_PIECEWISE"}'
        # seed 002:156 (`{"cudagraph_mode":"FULL_AND_PIECEWISE"}`) replaces the FP8 fusions
        assert argv.count("--compilation-config") == 1
        # seed 002:157 ("--kv-cache-dtype fp8")
        assert flag_value(argv, "--kv-cache-dtype") == "fp8"
        # seed 002:148 ("--max-num-batched-tokens 32768")
        assert flag_value(argv, "--max-num-batched-tokens") == "32768"

    def test_benchmark_and_accuracy(self) -> None:
        spec = load_stack_file("mi355x-llama70b").spec.verification
        (scenario,) = spec.scenarios
        assert scenario.dataset == "random"  # seed 002:245 ("--dataset-name random")
        # seed 002:233-234 ("input_tokens=8192 output_tokens=1024")
        assert (scenario.input_len, scenario.output_len) == (8192, 1024)
        assert scenario.max_concurrency == 64  # seed 002:235 ("max_concurrency=64")
        assert scenario.num_prompts == 128  # seed 002:236 ("num_prompts=128")
        # seed 002:251-252 ("--ignore-eos --seed 123")
        assert scenario.ignore_eos and scenario.seed == 123
        assert spec.accuracy is not None
        # seed 002:202 ("--tasks gsm8k")
        assert (spec.accuracy.task, spec.accuracy.num_fewshot) == ("gsm8k", 5)
        assert spec.accuracy.concurrency == 100  # seed 002:204 ("--batch_size 100")


class TestSeed003SGLang405b:
    """seeds/003: SGLang's Llama 3.1 cookbook, AMD section."""

    def test_flags(self) -> None:
        argv, _, _ = _docker("mi300x-llama405b-sglang")
        _assert_rocm_container(argv)
        # seed 003:38 ("--model-path Meta-Llama/Llama-3.1-405B-Instruct")
        assert flag_value(argv, "--model-path") == "meta-llama/Llama-3.1-405B-Instruct"
        # seed 003:39 ("--tp 8"), verified for 405B BF16 by seed 003:25 ("405B BF16 (TP=8)")
        assert flag_value(argv, "--tp") == "8"
        # seed 003:98 ("--tool-call-parser llama3")
        assert flag_value(argv, "--tool-call-parser") == "llama3"
        # the key is read from a YAML file the launch script writes, never from argv
        assert "--api-key" not in argv
        config = "/opt/amdfleet/mi300x-llama405b-sglang/engine-secrets.yaml"
        assert flag_value(argv, "--config") == config

    def test_accuracy_and_benchmarks(self) -> None:
        spec = load_stack_file("mi300x-llama405b-sglang").spec.verification
        # seed 003:492 ("--num-questions 200")
        assert spec.accuracy is not None and spec.accuracy.limit == 200
        shapes = [(s.num_prompts, s.max_concurrency) for s in spec.scenarios]
        # seed 003:222-223 ("--num-prompts 10 --max-concurrency 1"),
        # seed 003:268-269 ("--num-prompts 80 --max-concurrency 16"),
        # seed 003:314-315 ("--num-prompts 500 --max-concurrency 100")
        assert shapes == [(10, 1), (80, 16), (500, 100)]
        # seed 003:220-221 ("--random-input-len 1000 --random-output-len 1000")
        assert {(s.input_len, s.output_len) for s in spec.scenarios} == {(1000, 1000)}


class TestSeed004TwoNode405b:
    """seeds/004: 405B BF16 with pipeline parallelism across two nodes."""

    def test_pp2_tp8_on_both_nodes(self) -> None:
        for rank in (0, 1):
            argv, env, script = _docker("mi300x-2node-llama405b-bf16", rank)
            # seed 004:56 ("--tensor-parallel-size 8")
            assert flag_value(argv, "--tensor-parallel-size") == "8"
            # seed 004:56 ("--pipeline-parallel-size 2")
            assert flag_value(argv, "--pipeline-parallel-size") == "2"
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
        # seed 004:42 ("average input length of 1024 tokens and the average output length of 128")
        assert (scenario.input_len, scenario.output_len) == (1024, 128)
