"""The toy world: deterministic data generators, a tiny tokenizer and tiny Qwen2 models.

Modules (import what you need; `tokenizer` and `model` pull in transformers, the rest do not):
    tasks         write_toy_data / generate / TOY_TASKS / GENERATOR_VERSION (the entry point)
    arithmetic    in-domain arithmetic chains (the corpus: word problems), worked solutions
    skills        out-of-domain exact-match and multiple-choice skills
    instructions  IFEval-style format instructions with reference responses
    checks        check(response, checks) -> (strict, loose), the IFEval-style rules
    chatml        the chat format (special tokens, Jinja template, render_chat)
    tokenizer     build_tokenizer(out_dir)
    model         make_tiny_model(out_dir, size, seed)
See docs/toy-world.md.
"""
