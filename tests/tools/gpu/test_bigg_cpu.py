"""tools.gpu.bigg_cpu: the CPU proof of the competition architecture, run here on kit-micro-vit."""
import json

from open_clip.transform import PreprocessCfg

from lib.data.transforms import eval_transform
from tools.gpu import bigg_cpu


def test_bigg_s_preprocessing_is_described_as_the_reference_printed_it():
    """ViT-bigG-14's preprocess config (224 px, OpenAI mean and std) gives the reference's steps."""
    assert bigg_cpu.describe(eval_transform(PreprocessCfg(size=224))) == bigg_cpu.REFERENCE_TRANSFORM
    assert bigg_cpu.describe(eval_transform(PreprocessCfg(size=64)))[1:3] == ["Resize(64, bicubic)",
                                                                            "CenterCrop(64, 64)"]


def test_the_proof_runs_on_the_micro_model_and_reports_the_trim_exact(tmp_path, capsys):
    out = tmp_path / "report.json"
    args = ["--model", "kit-micro-vit", "--captions", "6", "--images", "2", "--out", str(out)]
    assert bigg_cpu.main(args) == 0
    report = json.loads(out.read_text())
    assert report["build"]["parameters"] == 3_388_993 and report["build"]["plan"] is None
    assert report["preprocessing"]["same"] is None  # only ViT-bigG-14 is compared with the reference
    trim = report["text_trim"]
    assert trim["captions"] == 6 and trim["context"] == 77 and trim["used_positions"] < 77
    assert trim["max_abs_difference"] < 1e-5 and trim["min_cosine"] > 0.99999
    assert report["encode"]["agreement"]["min_cosine"] > 0.99 and report["encode"]["kit"]["images"] == 2
    assert report["peak_rss_gb"] >= report["build"]["peak_rss_gb"] > 0
    assert "parameters" in capsys.readouterr().out
