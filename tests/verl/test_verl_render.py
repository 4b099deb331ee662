"""Rendering, Hydra composition against verl's config tree, and verl's own validation (CPU, no runs)."""

from __future__ import annotations

import pytest

from psft_orchestrator.backends.verl import render, render_overrides, validate, validate_node_config
from psft_orchestrator.configs.training import GRPOConfig, PSFTConfig, SFTConfig


def as_dict(overrides: list[str]) -> dict[str, str]:
    return dict(o.lstrip("+").split("=", 1) for o in overrides)


def test_quoting_survives_hydra_grammar():
    assert render.q("train[method=PSFT,seed=1]") == "'train[method=PSFT,seed=1]'"
    assert render.q([0.9, 0.95]) == "[0.9,0.95]"
    assert render.q(True) == "true" and render.q(None) == "null" and render.q(1e-06) == "1e-06"
    cfg = validate.compose(
        "sft", [render.kv("trainer.experiment_name", "a[b=c,d]'x"), "optim.lr=1e-06"]
    )
    assert cfg.trainer.experiment_name == "a[b=c,d]'x"
    assert cfg.optim.lr == 1e-06


def test_sft_overrides_map_our_fields():
    cfg = SFTConfig(
        lr=3e-5,
        weight_decay=0.05,
        grad_clip=0.5,
        train_batch_size=16,
        micro_batch_size=2,
        max_length=512,
        epochs=2,
        seed=7,
        lr_scheduler="cosine",
        warmup_ratio=0.1,
    )
    o = as_dict(
        render.sft_overrides(
            "sft", cfg, train_file="/d/t.parquet", model_path="/m", checkpoint_dir="/c", n_rows=40
        )
    )
    assert o["optim.lr"] == "3e-05"  # verl's default is 1e-3
    assert o["optim.weight_decay"] == "0.05" and o["optim.clip_grad"] == "0.5"
    assert o["optim.lr_scheduler_type"] == "'cosine'" and o["optim.lr_warmup_steps_ratio"] == "0.1"
    assert o["data.train_batch_size"] == "16" and o["data.micro_batch_size_per_gpu"] == "2"
    assert o["data.max_length"] == "512" and o["trainer.seed"] == "7"
    assert o["trainer.total_training_steps"] == "4"  # 40 // 16 = 2 batches per epoch, 2 epochs
    assert o["trainer.logger"] == "['console','file']"
    assert o["trainer.resume_mode"] == "auto" and o["trainer.default_local_dir"] == "'/c'"
    assert "hf_model" in o["checkpoint.save_contents"]


def test_schedules():
    # PSFT keeps the train batch as verl's batch and takes k optimizer steps in it
    p = render.sft_schedule(
        PSFTConfig(train_batch_size=64, mini_batch_size=16, epochs=2), n_rows=200, kind="psft"
    )
    assert (p["batch"], p["optimizer_steps"], p["batches"], p["epochs"]) == (64, 24, 6, 2)
    # plain SFT with mini-batches is SFT with batch = mini-batch
    s = render.sft_schedule(
        SFTConfig(train_batch_size=64, mini_batch_size=16, max_steps=5), n_rows=200, kind="sft"
    )
    assert (s["batch"], s["optimizer_steps"], s["batches"]) == (16, 5, 5)
    f = render.sft_schedule(SFTConfig(train_batch_size=10, epochs=0.5), n_rows=100, kind="sft")
    assert (f["batches"], f["epochs"]) == (5, 1)
    with pytest.raises(ValueError, match="cannot fill one batch"):
        render.sft_schedule(SFTConfig(train_batch_size=64), n_rows=10, kind="sft")


@pytest.mark.parametrize(
    "kind,config",
    [
        ("sft", {"lr": 2e-5, "train_batch_size": 32, "micro_batch_size": 4}),
        ("dft", {"train_batch_size": 32, "dtype": "float32"}),
        (
            "psft",
            {
                "train_batch_size": 64,
                "mini_batch_size": 8,
                "warmup_sft_steps": 3,
                "lr_scheduler": "constant",
            },
        ),
        (
            "grpo",
            {"train_batch_size": 32, "mini_batch_size": 8, "rollout_n": 8, "micro_batch_size": 2},
        ),
    ],
)
def test_composes_and_validates(kind, config):
    validate_node_config(kind, config)  # raises on any problem
    composed = validate.compose(kind, render_overrides(kind, config))
    if kind == "grpo":
        a = composed.actor_rollout_ref.actor
        assert composed.algorithm.adv_estimator == "grpo"
        assert (a.clip_ratio_low, a.clip_ratio_high, a.loss_agg_mode, a.use_kl_loss) == (
            0.2,
            0.28,
            "token-mean",
            False,
        )
        assert composed.actor_rollout_ref.rollout.n == 8 and a.optim.lr == 1e-6
        assert composed.reward.reward_manager.name == "dapo"
        assert composed.reward.reward_kwargs.overlong_buffer_cfg.len == 2048
        assert composed.reward.custom_reward_function.path.endswith("backends/verl/reward.py")
        assert composed.algorithm.filter_groups.enable is True
    else:
        assert composed.optim.lr == (
            config.get("lr") or render.CONFIGS[kind].model_fields["lr"].default
        )
        assert composed.trainer.logger == ["console", "file"]
    if kind == "psft":
        assert (
            composed.psft.mini_batch_size,
            composed.psft.clip_high,
            composed.psft.warmup_sft_steps,
        ) == (8, 0.28, 3)


def test_ray_address_joins_cluster():
    o = render.grpo_overrides(
        GRPOConfig(),
        train_file="/t",
        model_path="/m",
        checkpoint_dir="/c",
        ray_address="10.0.0.1:6379",
    )
    composed = validate.compose("grpo", o)
    assert composed.ray_kwargs.ray_init.address == "10.0.0.1:6379"


def test_unknown_key_is_named():
    with pytest.raises(validate.VerlConfigError, match=r"optim\.lrr"):
        validate.compose("sft", ["optim.lrr=1e-5"])
    with pytest.raises(validate.VerlConfigError, match=r"actor_rollout_ref\.actor\.clip_ratio_hi"):
        validate.compose("grpo", ["actor_rollout_ref.actor.clip_ratio_hi=0.3"])


def test_verl_validation_rejects_bad_values():
    # verl's own validate_config: the mini-batch cannot be split over 3 GPUs
    o = render.grpo_overrides(
        GRPOConfig(train_batch_size=32, mini_batch_size=8, rollout_n=1, micro_batch_size=2),
        train_file="/t",
        model_path="/m",
        checkpoint_dir="/c",
        n_gpus=3,
    )
    with pytest.raises(validate.VerlConfigError, match="validate_config"):
        validate.check("grpo", validate.compose("grpo", o))
    # verl's optimizer dataclass: scheduler type it does not know (bypassing our own check)
    with pytest.raises(validate.VerlConfigError, match="optim"):
        validate.check("sft", validate.compose("sft", ["optim.lr_scheduler_type=wsd"]))


@pytest.mark.parametrize(
    "kind,config,match",
    [
        ("sft", {"lr_scheduler": "linear"}, "lr_scheduler"),
        ("sft", {"kl": {"coef": 0.5}}, "SFT-KL"),
        ("sft", {"loss_agg_mode": "seq-mean-token-mean"}, "token-mean"),
        ("psft", {"old_policy": "initial"}, "old_policy"),
        ("psft", {"entropy_top_frac": 0.2}, "entropy_top_frac"),
        ("iwsft", {}, "not available on the verl backend"),
    ],
)
def test_unsupported_fields_are_refused(kind, config, match):
    with pytest.raises(render.UnsupportedConfig, match=match):
        validate_node_config(kind, config)


def test_rows_in_verl_formats():
    sft = render.sft_rows(
        [
            {
                "messages": [
                    {"role": "user", "content": "q"},
                    {"role": "assistant", "content": "a"},
                ],
                "answer": "a",
            }
        ]
    )
    assert sft == [
        {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
    ]
    with pytest.raises(ValueError, match="assistant"):
        render.sft_rows([{"messages": [{"role": "user", "content": "q"}]}])
    rl = render.rl_rows(
        [
            {
                "prompt": [{"role": "user", "content": "1+1?"}],
                "ground_truth": "2",
                "data_source": "toy",
            }
        ],
        format_reward=0.1,
    )
    assert rl[0]["reward_model"] == {"style": "rule", "ground_truth": "2"}
    assert (rl[0]["data_source"], rl[0]["ability"], rl[0]["extra_info"]["format_reward"]) == (
        "toy",
        "math",
        0.1,
    )


def test_reward_function():
    from psft_orchestrator.backends.verl.reward import compute_score

    assert compute_score("toy", "so \\boxed{\\frac{1}{2}}", "0.5") == 1.0
    assert compute_score("toy", "so \\boxed{3}", "0.5") == 0.0
    assert compute_score("toy", "no box 0.5", "0.5") == 0.0
    assert compute_score("toy", "\\boxed{3}", "0.5", {"format_reward": 0.1}) == pytest.approx(0.1)


def test_metric_mapping_sums_parts_and_dedupes():
    from psft_orchestrator.backends.verl.launch import map_metrics

    rows = {
        1: {"train/loss": 2.0, "train/ce": [[0.25, 0.5]], "perf/mfu": 0.1},
        2: {"train/loss": 1.5, "train/lr": 1e-5, "train/grad_norm": 0.3},
    }
    assert map_metrics(rows) == [
        {"step": 1, "loss": 2.0, "ce": 0.75},
        {"step": 2, "loss": 1.5, "lr": 1e-5, "grad_norm": 0.3},
    ]
    assert [
        r["step"] for r in map_metrics({s: {"train/loss": 1.0} for s in range(1, 6)}, log_every=2)
    ] == [2, 4, 5]


def test_grpo_fails_fast_without_gpu(tmp_path, micro_model):
    import torch

    from psft_orchestrator.backends.verl import run
    from psft_orchestrator.contract import InputRef, Job

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    job = Job(
        node_id="rl",
        stage="rl",
        kind="grpo",
        backend="verl",
        fingerprint="0" * 64,
        config={},
        inputs={
            "model": InputRef(type="model", path=str(micro_model)),
            "data": InputRef(type="prompts", path=str(tmp_path / "p.jsonl")),
        },
        node_dir=str(tmp_path),
        checkpoint_dir=str(tmp_path / "ck"),
        output_type="model",
    )
    with pytest.raises(RuntimeError, match="GRPO on verl needs GPUs"):
        run(job)
