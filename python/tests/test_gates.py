"""The PyTorch UNet with ALTER's gates equals `alter forward --gates/--skip --features` on the example."""

import torch
from safetensors.torch import load_file, save_file

from alter_torch.units import SKIP, GatedUNet, load_unet
from conftest import EXAMPLE, EXAMPLE_CONFIG, EXAMPLE_INPUTS, run


def rel_l2(a, b):
    return float((a - b).norm() / b.norm())


def test_unit_list_and_gated_forward_match_alter(alter, example_unet, tmp_path):
    unet = GatedUNet(load_unet(str(example_unet)))
    names = [u.name for u in unet.units]
    inspect = run([alter, "inspect", EXAMPLE, "--config", EXAMPLE_CONFIG, "--units", "--latent", "16", "--context", "5", "--json"])
    import json
    listed = [u["name"] for u in json.loads(inspect.stdout)["units"]]
    assert names == listed

    inputs = load_file(str(EXAMPLE_INPUTS))
    x, t, ctx = inputs["sample"].float(), inputs["timestep"].float(), inputs["context"].float()
    b = x.shape[0]
    g = torch.Generator().manual_seed(5)
    gates, skip = {}, []
    for i, n in enumerate(names):
        if i % 5 == 4:
            skip.append(n)
        elif i % 3 != 2:
            v = torch.rand(b, generator=g)
            v[0] = 0.0 if i % 2 else 1.0
            gates[n] = v
    save_file(gates, str(tmp_path / "gates.safetensors"))
    run([alter, "forward", EXAMPLE, "--config", EXAMPLE_CONFIG, "--inputs", EXAMPLE_INPUTS, "--gates", tmp_path / "gates.safetensors",
         "--skip", ",".join(skip), "--features", "-o", tmp_path / "out.safetensors"])
    ref = load_file(str(tmp_path / "out.safetensors"))
    if t.numel() == 1:
        t = t.expand(b)
    with torch.no_grad():
        out, feats = unet(x, t, ctx, gates={**gates, **{n: SKIP for n in skip}}, tap_features=True)
    errors = {"out": rel_l2(out, ref["out"])}
    for name, f in feats:
        errors[name] = rel_l2(f, ref["feature." + name])
    print("relative L2 errors:", errors)
    assert max(errors.values()) < 1e-5, errors
