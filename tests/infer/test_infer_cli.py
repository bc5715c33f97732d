"""`eve-vlm chat` from a stdin script and `eve-vlm generate` end to end, with bad lines and resume."""

from __future__ import annotations

import json
import subprocess
import sys

from infer_helpers import user

from eve_vlm.cli import main
from eve_vlm.data.image import load_image
from eve_vlm.infer import GenerationRequest, SamplingParams
from eve_vlm.infer.chat import ChatSession

PARAMS = SamplingParams(max_new_tokens=8)


def test_chat_reads_a_script_from_stdin(tiny_model_dir, image_files, generator):
    script = (f"/image {image_files[0]}\nWhat digit is this?\n/image /no/such/file.png\nAnd now?\n"
              "/help\n/reset\nhello\n/quit\nnever asked\n")
    done = subprocess.run([sys.executable, "-m", "eve_vlm.cli", "--log-level", "WARNING", "chat", "--model",
                           str(tiny_model_dir), "--device", "cpu", "--max-new-tokens", "8"],
                          input=script, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == f"(image attached: {image_files[0]})"
    first = generator.generate([GenerationRequest([user("What digit is this?", 1)],
                                                  [load_image(image_files[0])], PARAMS)])[0].text
    assert lines[1] == first
    assert lines[2].startswith("error: /no/such/file.png: no such image file")
    assert "(conversation reset)" in lines
    after_reset = generator.generate([GenerationRequest([user("hello")], [], PARAMS)])[0].text
    assert lines[-1] == after_reset  # the history was forgotten; nothing after /quit ran
    assert "you>" not in done.stdout  # no prompts when stdin is not a terminal


def test_chat_session_keeps_history_and_images(generator, image_files):
    session = ChatSession(generator, PARAMS)
    session.add_image(str(image_files[0]))
    first = session.ask("What digit is this?", lambda _: None)
    session.add_image(str(image_files[1]))
    second = session.ask("And this one?", lambda _: None)
    assert [m["role"] for m in session.messages] == ["user", "assistant", "user", "assistant"]
    assert len(session.images) == 2 and not session.pending_images
    expected = generator.generate([GenerationRequest(
        [user("What digit is this?", 1), {"role": "assistant", "content": first.strip()}, user("And this one?", 1)],
        [load_image(image_files[0]), load_image(image_files[1])], PARAMS)])[0].text
    assert second == expected
    session.reset()
    assert session.messages == [] and session.images == []


def _write_lines(path, lines):
    with path.open("a") as f:
        for line in lines:
            f.write((line if isinstance(line, str) else json.dumps(line)) + "\n")


def _answers(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_generate_batches_reports_bad_lines_and_resumes(tmp_path, tiny_model_dir, image_files, caplog):
    for image in image_files:
        (tmp_path / image.name).write_bytes(image.read_bytes())
    prompts, answers = tmp_path / "prompts.jsonl", tmp_path / "answers.jsonl"
    _write_lines(prompts, [
        {"id": "a", "image": "img0.png", "prompt": "What digit is this?"},
        {"id": "b", "image": ["img1.png", "img2.png"], "prompt": "Compare them."},
        "{this is not json",
        {"id": "c", "prompt": "no image at all"},
        {"id": "d", "image": "missing.png", "prompt": "?"},
        {"id": 5, "image": "img2.png", "messages": [user("What is it?", 1), {"role": "assistant", "content": "a cat"},
                                                     user("Sure?")]},
        {"id": "e", "image": "img0.png"},
        {"id": "a", "image": "img1.png", "prompt": "a repeated id"},
    ])
    args = ["generate", "--model", str(tiny_model_dir), "--device", "cpu", "--input", str(prompts),
            "--output", str(answers), "--batch-size", "2", "--max-new-tokens", "6", "--no-progress"]
    assert main(args) == 1  # some lines failed; the others were answered
    first = _answers(answers)
    assert [a["id"] for a in first] == ["a", "b", "c", 5]
    assert all(a["completion_tokens"] == 6 and a["finish_reason"] == "length" for a in first)
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert [e.split(":")[0] for e in errors] == ["line 3", "line 5", "line 7"]
    assert "no such image file" in errors[1]

    # an interrupted run: the last answer is lost and a cut-off line is left; new prompts are appended
    kept = answers.read_text().splitlines()[:-1]
    answers.write_text("\n".join(kept) + '\n{"id": 5, "ans')
    _write_lines(prompts, [{"id": "f", "image": "img1.png", "prompt": "What digit is this?"}])
    caplog.clear()
    assert main(args) == 1  # the same three bad lines are reported again
    second = _answers(answers)
    assert [a["id"] for a in second] == ["a", "b", "c", 5, "f"]
    assert second[:4] == first  # greedy: the re-answered line is identical


def test_generate_image_root(tmp_path, tiny_model_dir, image_files, capsys):
    prompts, answers = tmp_path / "prompts.jsonl", tmp_path / "answers.jsonl"
    _write_lines(prompts, [{"id": i, "image": image.name, "prompt": "What digit is this?"}
                           for i, image in enumerate(image_files)])
    assert main(["generate", "--model", str(tiny_model_dir), "--input", str(prompts), "--output", str(answers),
                 "--image-root", str(image_files[0].parent), "--max-new-tokens", "4", "--no-progress"]) == 0
    assert [a["id"] for a in _answers(answers)] == [0, 1, 2]
    assert "3 answered, 0 already done, 0 failed" in capsys.readouterr().out


def test_generate_missing_input(tmp_path, tiny_model_dir, capsys):
    assert main(["generate", "--model", str(tiny_model_dir), "--input", str(tmp_path / "none.jsonl"),
                 "--output", str(tmp_path / "out.jsonl")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_generate_rejects_bad_arguments(tmp_path, tiny_model_dir, capsys):
    prompts = tmp_path / "p.jsonl"
    _write_lines(prompts, [{"id": 1, "prompt": "hi"}])
    common = ["generate", "--model", str(tiny_model_dir), "--input", str(prompts), "--output", str(tmp_path / "o")]
    assert main([*common, "--batch-size", "0"]) == 2
    assert "--batch-size=0 must be >= 1" in capsys.readouterr().err
    assert main([*common, "--top-p", "0"]) == 2
    assert "top_p" in capsys.readouterr().err
