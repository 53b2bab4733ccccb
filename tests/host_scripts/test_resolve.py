"""The Resolve script (host_scripts/resolve/hushbridge_resolve.py) against the fake Resolve API
(tests/fakes/resolve.py), cleaning real files with the real `hushbridge process`."""
from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from fakes.resolve import Resolve, Timeline

from hushbridge.host_scripts.resolve import hushbridge_resolve as hr

SR = 48000
DEMO = Path(__file__).resolve().parents[2] / "bridge" / "data" / "demo.flac"


def digest(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    """Two noisy dialogue files (the demo clip, and a stereo one with more hiss)."""
    folder = tmp_path_factory.mktemp("media")
    speech, sr = sf.read(DEMO, dtype="float32")
    assert sr == SR
    a = folder / "interview.wav"
    sf.write(a, speech, SR, subtype="PCM_24")
    rng = np.random.default_rng(5)
    hiss = (0.01 * rng.standard_normal((speech.size, 2))).astype(np.float32)
    b = folder / "host.wav"
    sf.write(b, np.stack([speech, 0.8 * speech], axis=1) + hiss, SR, subtype="PCM_24")
    return a, b


def config(tmp_path, **extra):
    c = {"hushbridge": [sys.executable, "-m", "hushbridge"], "out_dir": str(tmp_path / "cleaned"),
         "preset": "dialogue"}
    c.update(extra)
    return c


def edit(media, fps="25", version=20):
    """A dialogue edit at 25 fps, starting at 01:00:00:00: three clips of two files on A1 (one
    file used twice), a transition, a disabled clip, and music on a disabled A2."""
    a, b = media
    tl = Timeline("Edit", fps=fps, start_frame=90000, version=version)
    resolve = Resolve(tl, version=version)
    pool = resolve.fake_pool
    ma, mb = pool.ImportMedia([str(a), str(b)])
    t1 = tl.fake_add_track("Dialogue", "mono")
    t2 = tl.fake_add_track("Music", "stereo", enabled=False)
    s = tl.GetStartFrame()
    clips = [tl.fake_place(t1, ma, 24, 96, s + 10),  # source frames at the WAV's 24 fps
             tl.fake_place(t1, ma, 150, 222, s + 100),
             tl.fake_place(t1, mb, 30, 126, s + 200)]
    tl.fake_place(t1, None, 0, 12, s + 95, name="")  # a cross-fade: an item with no media
    tl.fake_place(t1, ma, 0, 12, s + 400, enabled=False)
    tl.fake_place(t2, mb, 0, 48, s)
    return resolve, tl, clips


def test_clips_are_cleaned_and_laid_on_new_tracks_at_their_record_frames(media, tmp_path):
    before = [digest(p) for p in media]
    resolve, tl, clips = edit(media)
    lines: list[str] = []
    summary = hr.clean_timeline(resolve, config(tmp_path), report=lines.append)
    text = "\n".join(lines)
    assert summary["placed"] == 3 and summary["failed"] == 0 and not summary["errors"], text
    assert summary["tracks"] == ["HushBridge dialogue - Dialogue (mono)", "HushBridge dialogue - Dialogue (stereo)"]
    assert "skipped (transition): not a clip" in text and "skipped interview.wav: disabled" in text
    assert [digest(p) for p in media] == before  # originals never touched
    assert tl.GetTrackCount("audio") == 4 and tl.GetTrackSubType("audio", 3) == "mono"
    assert tl.GetTrackSubType("audio", 4) == "stereo"
    new = tl.GetItemListInTrack("audio", 3) + tl.GetItemListInTrack("audio", 4)
    for old, item in zip(clips, new):
        assert (item.GetStart(), item.GetDuration()) == (old.GetStart(), old.GetDuration())
        assert (item.GetSourceStartFrame(), item.GetSourceEndFrame()) == (old.GetSourceStartFrame(),
                                                                          old.GetSourceEndFrame())
        path = item.GetMediaPoolItem().GetClipProperty("File Path")
        assert path.endswith(".dialogue.hushbridge.wav") and os.path.dirname(path) == str(tmp_path / "cleaned")
        assert os.path.isfile(path + ".json")  # what the render depends on, for the next run
    assert resolve.fake_pool.GetRootFolder().GetSubFolderList()[0].GetName() == "HushBridge"
    # what the timeline plays: where each original clip played its source's seconds t0..t1, the
    # new track plays the cleaned file's t0..t1 (`process` output lines up with its input), and
    # that is not the original
    original, _ = tl.fake_render_track(1)
    mono, _ = tl.fake_render_track(3)
    stereo, _ = tl.fake_render_track(4)
    s = tl.GetStartFrame()
    for clip, played, item in ((clips[0], mono, new[0]), (clips[1], mono, new[1]), (clips[2], stereo, new[2])):
        cleaned, _ = sf.read(item.GetMediaPoolItem().GetClipProperty("File Path"), dtype="float64", always_2d=True)
        a = round((clip.GetStart() - s) / 25 * SR)
        n = round(clip.GetDuration() / 25 * SR)
        src = round(clip.GetSourceStartFrame() / 24 * SR)  # the WAV's source frames count at 24 fps
        np.testing.assert_allclose(played[:, a:a + n], cleaned[src:src + n].T, atol=1e-12)
        assert np.abs(played[0, a:a + n] - original[0, a:a + n]).max() > 1e-3


def test_a_second_run_reuses_the_renders_and_cancel_leaves_the_timeline_alone(media, tmp_path):
    resolve, tl, _ = edit(media)
    hr.clean_timeline(resolve, config(tmp_path), report=lambda _m: None)
    renders = sorted((tmp_path / "cleaned").iterdir())
    stamps = [p.stat().st_mtime_ns for p in renders]
    lines: list[str] = []
    summary = hr.clean_timeline(resolve, config(tmp_path), report=lines.append)
    assert summary["placed"] == 3 and "2 reused" in lines[-1]
    assert [p.stat().st_mtime_ns for p in sorted((tmp_path / "cleaned").iterdir())] == stamps
    assert resolve.fake_pool.fake_imports == 2 + 2  # the edit's two, then each render once
    assert tl.GetTrackName("audio", 5) == "HushBridge dialogue - Dialogue (mono) 2"  # a name of its own
    assert "skipped track HushBridge dialogue - Dialogue (mono): made by HushBridge" in "\n".join(lines)

    resolve, tl, _ = edit(media)

    def cancel_at_once(job):
        job.step()
        job.cancel()
        while not job.step():
            pass

    summary = hr.clean_timeline(resolve, config(tmp_path / "other"), report=lambda _m: None, job_runner=cancel_at_once)
    assert summary["cancelled"] and tl.GetTrackCount("audio") == 2


def test_selected_clips_alone_where_resolve_says_which_and_a_refused_append_is_reported(media, tmp_path):
    resolve, tl, clips = edit(media, version=21)
    tl.fake_select([clips[2]])
    summary = hr.clean_timeline(resolve, config(tmp_path), report=lambda _m: None)
    assert summary["placed"] == 1 and tl.GetItemListInTrack("audio", 3)[0].GetStart() == clips[2].GetStart()

    resolve, tl, clips = edit(media, version=21)  # a selection of video alone cleans nothing
    tl.fake_select([tl.fake_video_item(clips[0].GetMediaPoolItem(), tl.GetStartFrame(), 50)])
    lines = []
    summary = hr.clean_timeline(resolve, config(tmp_path), report=lines.append)
    assert summary["placed"] == 0 and tl.GetTrackCount("audio") == 2
    assert any("no audio clip in it" in line for line in lines)

    resolve, tl, clips = edit(media)  # version 20: no selection API, so every clip on enabled tracks
    resolve.fake_pool.fake_shift_appends = 3  # Resolve puts the clips elsewhere than asked
    lines = []
    summary = hr.clean_timeline(resolve, config(tmp_path), report=lines.append)
    assert summary["placed"] == 0 and summary["failed"] == 3
    assert sum("taken off again" in line for line in lines) == 3
    assert tl.GetTrackCount("audio") == 2  # no misplaced clip and no empty track left behind


def test_nothing_open_and_a_failing_engine_are_said_plainly(media, tmp_path):
    with pytest.raises(hr.ResolveScriptError, match="no timeline"):
        hr.clean_timeline(Resolve(None), config(tmp_path))
    resolve, tl, _ = edit(media)
    lines: list[str] = []
    summary = hr.clean_timeline(resolve, config(tmp_path, preset="no-such-preset"), report=lines.append)
    assert summary["placed"] == 0 and len(summary["errors"]) == 2
    assert any("could not clean" in line and "no-such-preset" in line for line in lines)
    assert tl.GetTrackCount("audio") == 2  # nothing cleaned: no empty track either


def test_the_api_is_probed_with_dir_not_hasattr():
    tl = Timeline(version=20)
    assert hasattr(tl, "GetSelectedClips") and tl.GetSelectedClips() is None  # the bridge's made-up callable
    assert not hr.has(tl, "GetSelectedClips") and hr.has(Timeline(version=21), "GetSelectedClips")
    fake = Resolve(tl)
    assert hr.get_resolve({"resolve": fake}) is fake

    class Bmd:
        @staticmethod
        def scriptapp(name):
            return fake if name == "Resolve" else None

    assert hr.get_resolve({"bmd": Bmd()}) is fake


def test_a_camera_clip_counted_at_its_video_rate_maps_through_seconds(media, tmp_path):
    """Source frames count at the media's frame rate: a camera file's audio at 25 fps, its
    cleaned WAV at the 24 Resolve gives audio files; the same seconds are placed."""
    from fakes.resolve import MediaPoolItem

    tl = Timeline("Cam", fps="25", start_frame=90000)
    resolve = Resolve(tl)
    camera = MediaPoolItem(str(media[0]), fps=25.0)  # as Resolve reads a .mov's audio
    resolve.fake_pool.GetRootFolder()._clips.append(camera)
    track = tl.fake_add_track("Camera audio", "mono")
    clip = tl.fake_place(track, camera, 50, 175, tl.GetStartFrame() + 20)  # 2 s to 7 s of the file
    summary = hr.clean_timeline(resolve, config(tmp_path), report=lambda _m: None)
    assert summary["placed"] == 1
    [item] = tl.GetItemListInTrack("audio", 2)
    assert (item.GetSourceStartFrame(), item.GetSourceEndFrame()) == (48, 168)  # 2 s and 7 s at 24 fps
    assert (item.GetStart(), item.GetDuration()) == (clip.GetStart(), clip.GetDuration())


def test_the_installed_menu_script_runs_in_resolve_and_cleans_the_edit(media, tmp_path):
    """`hushbridge install-host-scripts resolve --dest DIR` writes Utility/HushBridge Clean Audio.py;
    run as Resolve runs a menu script (its globals hold `resolve`), it cleans the edit."""
    import json
    import runpy
    import subprocess

    scripts = tmp_path / "Fusion" / "Scripts"
    r = subprocess.run([sys.executable, "-m", "hushbridge", "install-host-scripts", "resolve", "--dest", str(scripts),
                        "--preset", "podcast", "--out-dir", str(tmp_path / "out")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    script = scripts / "Utility" / "HushBridge Clean Audio.py"
    settings = json.loads((scripts / "Utility" / "hushbridge_resolve.json").read_text())
    assert settings["preset"] == "podcast" and settings["out_dir"] == str(tmp_path / "out")
    resolve, tl = loud_edit(media, tmp_path)
    runpy.run_path(str(scripts / "Utility" / "HushBridge Loudness Report.py"), init_globals={"resolve": resolve},
                   run_name="__main__")
    assert any(m["name"] == "Too loud" for m in tl.GetMarkers().values())
    resolve, tl, clips = edit(media)
    runpy.run_path(str(script), init_globals={"resolve": resolve}, run_name="__main__")
    assert tl.GetTrackName("audio", 3) == "HushBridge podcast - Dialogue (mono)"
    assert [i.GetStart() for i in tl.GetItemListInTrack("audio", 3)] == [c.GetStart() for c in clips[:2]]
    assert len(list((tmp_path / "out").glob("*.podcast.hushbridge.wav"))) == 2
    # Voice Isolation: Clean Audio with its own preset (the models), onto a track of its own
    assert settings["isolate_preset"] == "dialogue-isolate"
    runpy.run_path(str(scripts / "Utility" / "HushBridge Voice Isolation.py"), init_globals={"resolve": resolve},
                   run_name="__main__")
    assert tl.GetTrackName("audio", 5) == "HushBridge dialogue-isolate - Dialogue (mono)"  # 3, 4: podcast's
    assert [i.GetStart() for i in tl.GetItemListInTrack("audio", 5)] == [c.GetStart() for c in clips[:2]]
    assert len(list((tmp_path / "out").glob("*.dialogue-isolate.hushbridge.wav"))) == 2
    for flag in ("--preset", "--isolate-preset"):
        bad = subprocess.run([sys.executable, "-m", "hushbridge", "install-host-scripts", "resolve", "--dest",
                              str(scripts), flag, "nope"], capture_output=True, text=True, timeout=120)
        assert bad.returncode != 0 and "nope" in bad.stderr
    # a relative --dest and preset file: the script runs in Resolve's folder, so both are stored absolute
    (tmp_path / "my.toml").write_text('[[chain]]\neffect = "gain"\n')
    r = subprocess.run([sys.executable, "-m", "hushbridge", "install-host-scripts", "resolve", "--dest", "rel",
                        "--preset", "my.toml"], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    entry = (tmp_path / "rel" / "Utility" / "HushBridge Clean Audio.py").read_text()
    assert repr(str(tmp_path / "rel" / "Utility" / "hushbridge_resolve.json")) in entry
    assert json.loads((tmp_path / "rel" / "Utility" / "hushbridge_resolve.json").read_text())["preset"] == str(
        tmp_path / "my.toml")


def test_the_scripts_folder_is_resolves_per_user_one_on_each_os(tmp_path):
    from hushbridge.hosts.install import resolve_scripts_folder

    home = Path("/home/u")
    assert resolve_scripts_folder("linux", home) == home / ".local/share/DaVinciResolve/Fusion/Scripts"
    assert resolve_scripts_folder("darwin", home) == (
        home / "Library/Application Support/Blackmagic Design/DaVinci Resolve/Fusion/Scripts")
    assert resolve_scripts_folder("win32", home, {"APPDATA": "C:/Users/u/AppData/Roaming"}) == Path(
        "C:/Users/u/AppData/Roaming/Blackmagic Design/DaVinci Resolve/Support/Fusion/Scripts")


@pytest.mark.parametrize("cancel", [False, True])
def test_in_studio_a_window_shows_progress_and_cancel_stops_the_job(media, tmp_path, cancel):
    """With a UIManager (Resolve Studio) the menu script shows a window that follows the files
    and whose Cancel stops the child process and leaves the timeline as it was."""
    import json

    from fakes.resolve import Bmd, StudioFusion

    resolve, tl, _ = edit(media)
    bmd = Bmd(resolve, click_after=(2, "Cancel") if cancel else None)
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps(config(tmp_path)))
    summary = hr.main({"resolve": resolve, "bmd": bmd, "fusion": StudioFusion()}, str(cfg))
    [disp] = bmd.dispatchers
    assert disp.texts and disp.texts[0].startswith("0 of 2 files, now interview.wav")
    if cancel:
        assert summary["cancelled"] and tl.GetTrackCount("audio") == 2
        assert not list((tmp_path / "cleaned").glob("*.wav"))  # the child stopped before writing
    else:
        assert summary["placed"] == 3 and any(t.startswith("1 of 2 files, now host.wav") for t in disp.texts)


def test_the_resolve_module_stays_python_36_and_standard_library_only():
    import ast

    src = Path(hr.__file__).read_text()
    tree = ast.parse(src, feature_version=(3, 6))
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert imported <= set(sys.stdlib_module_names) | {"DaVinciResolveScript"}, imported


def test_field_recordings_of_one_name_tracks_of_their_own_and_trims_between_frames(tmp_path, media):
    """Two days' ZOOM0001.WAV in two folders named alike are two renders; boom and lav on two
    tracks keep two tracks; a clip trimmed on a 25 fps grid (between two of the WAV's 24 fps
    source frames) plays the same seconds of the cleaned file; retimed and reversed clips are
    skipped with the reason, and nothing of them is left on the timeline."""
    speech, _ = sf.read(DEMO, dtype="float32")
    days = []
    for day, gain in (("day1", 1.0), ("day2", 0.5)):
        (tmp_path / day / "Zoom").mkdir(parents=True)
        days.append(tmp_path / day / "Zoom" / "ZOOM0001.WAV")
        sf.write(days[-1], gain * speech, SR, subtype="PCM_24")
    tl = Timeline("Field", fps="25", start_frame=90000)
    resolve = Resolve(tl)
    m1, m2 = resolve.fake_pool.ImportMedia([str(p) for p in days])
    boom, lav = tl.fake_add_track("Boom", "mono"), tl.fake_add_track("Lav", "mono")
    s = tl.GetStartFrame()
    a = tl.fake_place_on_grid(boom, m1, 1.0 + 0.52 / 24, s, 13)  # 13 frames at 25: 12.48 of the WAV's
    b = tl.fake_place(lav, m2, 24, 96, s)  # the same record frames, another track
    retimed = TimelineItemFactory.retimed(tl, boom, m1, s + 100)
    cfg = config(tmp_path)
    lines: list[str] = []
    summary = hr.clean_timeline(resolve, cfg, report=lines.append)
    assert summary["placed"] == 2 and summary["failed"] == 0, lines
    assert any("retimed" in line for line in lines)
    assert summary["tracks"] == ["HushBridge dialogue - Boom", "HushBridge dialogue - Lav"]
    assert len(list((tmp_path / "cleaned").glob("ZOOM0001.*.wav"))) == 2
    [new_a], [new_b] = tl.GetItemListInTrack("audio", 3), tl.GetItemListInTrack("audio", 4)
    assert (new_a.GetStart(), new_a.GetDuration()) == (a.GetStart(), a.GetDuration())
    assert (new_b.GetStart(), new_b.GetDuration()) == (b.GetStart(), b.GetDuration())
    assert retimed.GetStart() not in [i.GetStart() for i in tl.GetItemListInTrack("audio", 3)]
    played, _ = tl.fake_render_track(3)
    cleaned, _ = sf.read(new_a.GetMediaPoolItem().GetClipProperty("File Path"), dtype="float64")
    src = round((1.0 + 0.52 / 24) * SR)
    n = round(13 / 25 * SR)
    np.testing.assert_allclose(played[0, :n], cleaned[src:src + n], atol=1e-12)


class TimelineItemFactory:
    @staticmethod
    def retimed(tl, track, media, record):
        """A clip at 50 %: 24 source frames over 48 record frames."""
        from fakes.resolve import TimelineItem

        item = TimelineItem(tl, media, track, record, 48, 0, 24)
        tl._tracks[track - 1]["items"].append(item)
        return item


def test_a_changed_preset_renders_again_and_errors_reach_the_user_as_lines(media, tmp_path, capsys):
    import json

    preset = tmp_path / "mine.toml"
    preset.write_text('[[chain]]\neffect = "highpass"\nparams = { cutoff_hz = 80.0 }\n')
    resolve, tl, _ = edit(media)
    hr.clean_timeline(resolve, config(tmp_path, preset=str(preset)), report=lambda _m: None)
    lines: list[str] = []
    resolve, tl, _ = edit(media)
    hr.clean_timeline(resolve, config(tmp_path, preset=str(preset)), report=lines.append)
    assert "2 reused" in lines[-1]
    preset.write_text('[[chain]]\neffect = "highpass"\nparams = { cutoff_hz = 120.0 }\n')
    lines = []
    resolve, tl, _ = edit(media)
    summary = hr.clean_timeline(resolve, config(tmp_path, preset=str(preset)), report=lines.append)
    assert summary["placed"] == 3 and "reused" not in lines[-1]  # the preset changed: rendered again
    assert tl.GetTrackName("audio", 3) == "HushBridge mine - Dialogue (mono)"

    cfg = tmp_path / "cfg.json"
    (tmp_path / "a-file").write_text("")
    for bad, says in ((config(tmp_path, out_dir=str(tmp_path / "a-file" / "out"), reuse=False), "output folder"),
                      (config(tmp_path, hushbridge=[str(tmp_path / "gone" / "python")], reuse=False),
                       "cannot run hushbridge")):
        cfg.write_text(json.dumps(bad))
        resolve, tl, _ = edit(media)
        capsys.readouterr()
        assert hr.main({"resolve": resolve}, str(cfg)) is None  # said, not raised into Resolve
        assert says in capsys.readouterr().out
        assert tl.GetTrackCount("audio") == 2


def loud_edit(media, tmp_path):
    """Dialogue on A1 and, from 6 s to 8 s of the timeline, a blast on A2 that is far too loud
    and clips (a stinger mixed 20 dB hot)."""
    resolve, tl, clips = edit(media)
    rng = np.random.default_rng(9)
    blast = np.clip(1.4 * rng.standard_normal(2 * SR), -1.0, 1.0).astype(np.float32)
    path = tmp_path / "stinger.wav"
    sf.write(path, blast, SR, subtype="FLOAT")
    [m] = resolve.fake_pool.ImportMedia([str(path)])
    t = tl.fake_add_track("FX", "mono")
    tl.fake_place(t, m, 0, 48, tl.GetStartFrame() + 150)  # 6 s in at 25 fps
    tl.AddMarker(0, "Green", "Scene 1", "the user's own", 1)
    return resolve, tl


def test_the_loudness_report_renders_the_mix_and_marks_where_it_is_too_loud(media, tmp_path):
    resolve, tl = loud_edit(media, tmp_path)
    lines: list[str] = []
    summary = hr.loudness_report(resolve, config(tmp_path, loudness_target=-16.0), report=lines.append)
    assert summary["error"] is None and summary["markers"] >= 3, lines
    markers = tl.GetMarkers()
    ours = {f: m for f, m in markers.items() if m["customData"] == "hushbridge:loudness"}
    assert markers[0.0]["name"] == "Scene 1"  # the user's marker stays; ours is nudged past it
    [(f, summary_marker)] = [(f, m) for f, m in ours.items() if m["name"] == "Loudness"]
    assert f == 1.0 and "integrated" in summary_marker["note"] and "target -16.0 LUFS" in summary_marker["note"]
    loud = [(f, m) for f, m in ours.items() if m["name"] == "Too loud"]
    peaks = [(f, m) for f, m in ours.items() if m["name"] == "True peak over"]
    assert loud and peaks
    for f, m in loud:  # the short-term window ending 6..~11 s covers the blast at 6..8 s (frames 150..200)
        assert f <= 150 and f + m["duration"] >= 200
    for f, m in peaks:  # within the blast, to the 0.1 s step (2.5 frames) the mix is read in
        assert 150 <= f and f + m["duration"] <= 200 + 3
    assert resolve.GetCurrentPage() == "edit"  # put back: every render call opened Deliver
    assert resolve.fake_project.GetRenderJobList() == []  # our job is gone again
    assert not list((tmp_path / "cleaned").glob("hushbridge-mix-*.wav"))  # the render is not kept
    # a second report replaces the first's markers, not adds to them
    resolve.fake_project.fake_language = "it"  # "Concluso": the status is read by its percentage
    hr.loudness_report(resolve, config(tmp_path), report=lambda _m: None)
    again = {f: m for f, m in tl.GetMarkers().items() if m["customData"] == "hushbridge:loudness"}
    assert sorted(again) == sorted(ours)


def test_the_loudness_report_says_why_it_could_not_and_cancel_changes_nothing(media, tmp_path):
    resolve, tl = loud_edit(media, tmp_path)
    resolve.fake_project.fake_refuse_jobs = True
    lines: list[str] = []
    summary = hr.loudness_report(resolve, config(tmp_path), report=lines.append)
    assert summary["markers"] == 0 and "would not queue" in summary["error"]
    assert resolve.GetCurrentPage() == "edit"
    resolve.fake_project.fake_refuse_jobs = False
    resolve.fake_project.fake_polls_per_render = 50

    def cancel_while_rendering(job):
        for _ in range(3):
            job.step()
        job.cancel()
        while not job.step():
            pass

    summary = hr.loudness_report(resolve, config(tmp_path), report=lambda _m: None, job_runner=cancel_while_rendering)
    assert summary["cancelled"] and len(tl.GetMarkers()) == 1  # the user's marker alone
    assert resolve.GetCurrentPage() == "edit" and resolve.fake_project.GetRenderJobList() == []


def test_loudness_markers_stay_on_the_timeline_are_merged_and_capped():
    """A programme loud to its last frame, with a true peak over every other 0.1 s step for ten
    minutes: the red span ends at the timeline's end, nearby overs are one marker, and there are
    at most MAX_MARKERS of a kind, the summary saying how many more."""
    n = 6000  # 10 minutes of 0.1 s steps
    short = [-20.0] * (n - 30) + [-10.0] * 30  # loud for the last 3 s
    peaks = [0.5 if (i // 20) % 2 == 0 else -3.0 for i in range(n)]  # 2 s over, 2 s under, over and over
    result = {"integrated_lufs": -18.0, "lra_lu": None, "true_peak_dbtp": 0.5,
              "timeline": {"step_s": 0.1, "short_term_lufs": short, "true_peak_dbtp": peaks, "momentary_lufs": short}}
    length = 600 * 25
    markers = hr.loudness_markers(result, 25.0, -16.0, length=length)
    assert all(f + d <= length for f, _c, _n, _t, d in markers)
    red = [m for m in markers if m[2] == "Too loud"]
    yellow = [m for m in markers if m[2] == "True peak over"]
    assert len(red) == 1 and red[0][0] + red[0][4] == length
    assert len(yellow) == hr.MAX_MARKERS and "50 more true peak over" in markers[0][3]  # 150 overs in all
    assert "loudness range n/a" in markers[0][3]
    nearby = [0.5 if i in (10, 14, 30) else -3.0 for i in range(100)]  # 0.4 s apart: one; 1.6 s on: another
    result["timeline"]["true_peak_dbtp"] = nearby
    result["timeline"]["short_term_lufs"] = [-20.0] * 100
    assert len([m for m in hr.loudness_markers(result, 25.0, -16.0) if m[2] == "True peak over"]) == 2


def test_a_failed_stopped_or_stalled_render_is_said_and_leaves_nothing_behind(media, tmp_path, monkeypatch):
    resolve, tl = loud_edit(media, tmp_path)
    project = resolve.fake_project
    project.fake_fail_render = "disk full"
    summary = hr.loudness_report(resolve, config(tmp_path), report=lambda _m: None)
    assert "the render failed: disk full" in summary["error"] and project.GetRenderJobList() == []
    project.fake_fail_render = ""
    project.fake_presets = ["YouTube - 1080p"]  # no "Audio Only" (renamed, another language) and no wav codec
    summary = hr.loudness_report(resolve, config(tmp_path), report=lambda _m: None)
    assert "no \"Audio Only\" render preset" in summary["error"]
    project.fake_presets = ["Audio Only"]
    monkeypatch.setattr(hr.LoudnessJob, "STALL_S", 0.3)
    project.fake_polls_per_render = 10 ** 9  # a render stuck short of 100 %
    summary = hr.loudness_report(resolve, config(tmp_path), report=lambda _m: None)
    assert "no progress" in summary["error"]
    project.fake_polls_per_render = 3
    bad = config(tmp_path, hushbridge=[sys.executable, "-c", "import sys; sys.exit('cannot measure')"])
    summary = hr.loudness_report(resolve, bad, report=lambda _m: None)
    assert "could not measure the mix: cannot measure" in summary["error"]
    assert not list((tmp_path / "cleaned").glob("*mix*.wav"))  # the render went again, measured or not
    assert resolve.GetCurrentPage() == "edit" and project.render_mode == 1
    assert len(tl.GetMarkers()) == 1  # the user's alone: a failed report marks nothing


def test_a_poly_file_split_per_track_and_audio_synced_to_a_camera_clip_are_cleaned_as_heard(tmp_path):
    """What the clip plays, from its audio mapping (GetSourceAudioChannelMapping): a field
    recorder's poly WAV split into Boom (channel 1) and Lav (channel 2) tracks gives a mono cleaned
    boom and a mono cleaned lav (each track had both channels, stereo, before: QA, session 30);
    a camera clip whose sound was synced from that recorder (Auto Sync Audio: a linked file with
    an offset in samples) is cleaned from the recorder's file, not from the camera's scratch
    audio, at the synced position; a muted mapping is skipped with the reason."""
    speech, _ = sf.read(DEMO, dtype="float64")
    rng = np.random.default_rng(9)
    n = speech.size
    boom = 0.5 * speech + 0.01 * rng.standard_normal(n)
    lav = np.roll(0.7 * speech, 4800) + 0.01 * rng.standard_normal(n)  # another take of the words
    poly = tmp_path / "ZOOM0007.WAV"
    sf.write(poly, np.stack([boom, lav], 1), SR, subtype="PCM_24")
    camera = tmp_path / "C0001.wav"  # the camera's own scratch track (a WAV stands in for its MOV)
    sf.write(camera, 0.05 * rng.standard_normal(n), SR, subtype="PCM_24")
    tl = Timeline("Sync", fps="25", start_frame=90000)
    resolve = Resolve(tl)
    m_poly, m_cam = resolve.fake_pool.ImportMedia([str(poly), str(camera)])
    offset = 12000  # the camera rolled 0.25 s after the recorder: camera sample t = recorder t - 12000
    first_linked = m_cam.fake_link(str(poly), offset=-offset)
    t_boom, t_lav, t_cam = (tl.fake_add_track(name, "mono") for name in ("Boom", "Lav", "Camera"))
    s = tl.GetStartFrame()
    tl.fake_place(t_boom, m_poly, 24, 96, s).fake_map([1])
    tl.fake_place(t_lav, m_poly, 24, 96, s).fake_map([2])
    synced = tl.fake_place(t_cam, m_cam, 48, 120, s + 200).fake_map([first_linked + 1])  # the lav, synced
    tl.fake_place(t_cam, m_cam, 0, 24, s + 400).fake_map([1], mute=True)
    lines: list[str] = []
    summary = hr.clean_timeline(resolve, config(tmp_path), report=lines.append)
    assert summary["placed"] == 3 and summary["failed"] == 0 and not summary["errors"], lines
    assert any("muted in its audio mapping" in line for line in lines), lines
    names = sorted(p.name for p in (tmp_path / "cleaned").glob("*.hushbridge.wav"))
    assert len(names) == 2 and all(".ch1." in x or ".ch2." in x for x in names), names  # the camera's audio: not cleaned
    for source_track, new_track, channel in ((t_boom, 4, 1), (t_lav, 5, 2), (t_cam, 6, 2)):
        assert tl.GetTrackName("audio", new_track).endswith(tl.GetTrackName("audio", source_track))
        (item,) = tl.GetItemListInTrack("audio", new_track)
        path = item.GetMediaPoolItem().GetClipProperty("File Path")
        assert sf.info(path).channels == 1 and f".ch{channel}." in path
        played, _ = tl.fake_render_track(new_track)
        original, _ = tl.fake_render_track(source_track)
        assert played.shape[0] == 1
        # the cleaned track plays the words the original plays, where it plays them: it follows
        # the channel it was made from, not the other (the poly file's two takes of the words)
        a, b = original[0], played[0]
        live = np.abs(a) > 0
        if source_track == t_cam:
            live &= np.arange(a.size) < round(420 / 25 * SR)  # the muted clip plays nothing
            start = round(200 / 25 * SR)
            src = round(48 / 24 * SR) + offset  # the recorder's sample under the camera's
            np.testing.assert_allclose(a[start:start + 1000], lav[src:src + 1000], atol=1e-6)
        where = np.flatnonzero(live)
        heard = {1: boom, 2: lav}
        lag = (where - round((200 if source_track == t_cam else 0) / 25 * SR) + round((48 if source_track == t_cam
               else 24) / 24 * SR) + (offset if source_track == t_cam else 0))
        right = np.corrcoef(b[where], heard[channel][lag])[0, 1]
        wrong = np.corrcoef(b[where], heard[3 - channel][lag])[0, 1]
        assert right > 0.6 and right > wrong + 0.3, (source_track, right, wrong)
    assert synced.GetStart() in [i.GetStart() for i in tl.GetItemListInTrack("audio", 6)]


def test_a_short_speed_change_on_a_timeline_of_the_media_s_rate_is_not_taken_for_100_percent(tmp_path, media):
    """A 1 s clip at 104 % differs from 100 % by one frame: within the slack that frame rounding
    needs between two rates, so it was placed as if at 100 % (QA, session 30). Where media and
    timeline share a rate there is no rounding to allow for."""
    from fakes.resolve import TimelineItem

    a, _ = media
    tl = Timeline("Same rate", fps="24", start_frame=86400)
    resolve = Resolve(tl)
    (m,) = resolve.fake_pool.ImportMedia([str(a)])
    track = tl.fake_add_track("Dialogue", "mono")
    s = tl.GetStartFrame()
    fast = TimelineItem(tl, m, track, s, 24, 0, 25)  # 25 source frames over 24 record frames
    tl._tracks[track - 1]["items"].append(fast)
    plain = tl.fake_place(track, m, 48, 72, s + 48)
    lines: list[str] = []
    summary = hr.clean_timeline(resolve, config(tmp_path), report=lines.append)
    assert summary["placed"] == 1 and any("retimed" in line for line in lines), lines
    assert [i.GetStart() for i in tl.GetItemListInTrack("audio", 2)] == [plain.GetStart()]


def test_a_clip_split_into_tracks_in_clip_attributes_plays_the_track_of_its_place(tmp_path):
    """A poly WAV split in Clip Attributes into two mono tracks reports both tracks in each of its
    items' mappings (review, session 30: entry "1" was read for both, so the Lav item was
    cleaned from the Boom). Its items are linked, one per timeline track: the item's place among
    them says which entry it plays; where that cannot be told, the clip is skipped, not guessed."""
    from fakes.resolve import TimelineItem

    speech, _ = sf.read(DEMO, dtype="float64")
    rng = np.random.default_rng(3)
    boom = 0.5 * speech + 0.01 * rng.standard_normal(speech.size)
    lav = np.roll(0.7 * speech, 4800) + 0.01 * rng.standard_normal(speech.size)
    poly = tmp_path / "ZOOM0009.WAV"
    sf.write(poly, np.stack([boom, lav], 1), SR, subtype="PCM_24")
    tl = Timeline("Split", fps="25", start_frame=90000)
    resolve = Resolve(tl)
    (m,) = resolve.fake_pool.ImportMedia([str(poly)])
    m.fake_split([[1], [2]])
    t_boom, t_lav = tl.fake_add_track("Boom", "mono"), tl.fake_add_track("Lav", "mono")
    s = tl.GetStartFrame()
    pair = [tl.fake_place(t_boom, m, 24, 96, s), tl.fake_place(t_lav, m, 24, 96, s)]
    TimelineItem.fake_link_items(pair)
    lone = tl.fake_place(t_lav, m, 120, 144, s + 300)  # unlinked: its entry cannot be told
    lines: list[str] = []
    summary = hr.clean_timeline(resolve, config(tmp_path), report=lines.append)
    assert summary["placed"] == 2, lines
    assert any("lists 2 tracks and which one this clip plays cannot be told" in line for line in lines), lines
    for new_track, channel in ((3, 1), (4, 2)):
        (item,) = tl.GetItemListInTrack("audio", new_track)
        assert f".ch{channel}." in item.GetMediaPoolItem().GetClipProperty("File Path")
    assert lone.GetStart() not in [i.GetStart() for i in tl.GetItemListInTrack("audio", 4)]
