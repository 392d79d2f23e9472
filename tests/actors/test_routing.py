"""Two device owners in one tree, with fake devices: every model id reaches the owner the
placement gave it, batches take the shape of the model they go to, mixed-language load
keeps each result with its request, and a fault on either owner leaves the other serving.

The "NPU" fake takes NPU-style input (uint8 RGB frames of a fixed 48x320, fixed batch of
8, two jobs at once); the "CPU" fake takes the ONNX layout with dynamic widths. Images are
bars whose colour is an id (``fakes.bars_image``), so every line read proves which crop
it came from."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio

from actors.errors import NotReady, RequestTimeout
from actors.messages import OcrRequest
from actors.service import OcrService, open_ocr_service
from npu.errors import DeviceFault, DeviceLost, ModelLoadError
from npu.placement import CPU, NPU, ModelPlacement, Placement
from tests.support.config import with_changes
from tests.support.fakes import FakeBackend, FakeDevice, bars_image

BAR_W = 120  # narrow enough that a bar fits the fixed 320-column recogniser whole


@pytest.fixture
def cfg(config):
    return with_changes(
        config,
        server={"request_timeout_s": 10.0},
        ocr={"det_limit_side_len": 32},
        backend={"job_timeout_s": 5.0, "restart_backoff_s": 0.05, "restart_backoff_max_s": 0.2},
    )


def npu_device(**kw) -> FakeDevice:
    kw.setdefault("max_jobs_in_flight", 2)
    return FakeDevice(layout="nhwc_uint8_rgb", rec_policy="fixed", rec_width=320,
                      rec_batch_size=8, **kw)


def cpu_device(**kw) -> FakeDevice:
    return FakeDevice(layout="nchw_float", rec_policy="dynamic", rec_batch_size=8, **kw)


def placement(detection: str = NPU, en: str = NPU, zh: str = CPU) -> Placement:
    """A Pi with only the English HEFs by default: detection and English on the NPU,
    Chinese on the CPU."""
    return Placement((
        ModelPlacement("detection", detection, "test"),  # type: ignore[arg-type]
        ModelPlacement("recognition_en", en, "test"),  # type: ignore[arg-type]
        ModelPlacement("recognition_zh", zh, "test"),  # type: ignore[arg-type]
    ))


@asynccontextmanager
async def mixed_host(
    cfg, npu: FakeDevice, cpu: FakeDevice, where: Placement | None = None
) -> AsyncIterator[OcrService]:
    async with open_ocr_service(
        cfg, {**npu.factory(NPU), **cpu.factory(CPU)}, where or placement()
    ) as svc:
        yield svc


def request(ids, lang, rid=None) -> OcrRequest:
    return OcrRequest(bars_image(ids, bar_w=BAR_W), (lang,), rid)


async def read(svc, ids, lang) -> list[str]:
    result = await svc.extract(request(ids, lang))
    assert result.language == lang
    return list(result.lines)


def expected(ids) -> list[str]:
    return [str(i) for i in ids]


async def wait_until(predicate, within: float = 5.0) -> None:
    with trio.fail_after(within):
        while not predicate():  # noqa: ASYNC110 - polling published state, there is no event
            await trio.sleep(0.005)


# -- routing -----------------------------------------------------------------------------------


async def test_each_model_runs_on_the_device_it_was_placed_on(cfg):
    npu, cpu = npu_device(), cpu_device()
    async with mixed_host(cfg, npu, cpu) as svc:
        assert await read(svc, [11, 12, 13], "en") == ["11", "12", "13"]
        assert await read(svc, [21, 22], "zh") == ["21", "22"]
        assert svc.languages == ("en", "zh")
        assert {m: p.device for m, p in svc.models.models.items()} == {
            "detection": NPU, "recognition_en": NPU, "recognition_zh": CPU,
        }
        assert svc.devices_for("en") == (NPU,) and svc.devices_for("zh") == (NPU, CPU)
        assert svc.statistics().model_loads == 1  # two devices, one load of the models
    assert {c.model_id for c in npu.calls} == {"detection", "recognition_en"}
    assert {c.model_id for c in cpu.calls} == {"recognition_zh"}
    assert sorted(npu.ids_run()) == [11, 12, 13] and sorted(cpu.ids_run()) == [21, 22]
    # Each backend was told exactly its own models.
    assert npu.loads == cpu.loads == 1


async def test_batches_take_the_shape_of_the_model_they_go_to(cfg):
    """A wide line goes to the NPU recogniser in fixed 48x320 uint8 RGB pieces, and to the
    CPU one whole, as float NCHW of its own padded width: what each device's spec says."""
    npu, cpu = npu_device(), cpu_device()
    async with mixed_host(cfg, npu, cpu) as svc:
        en = await svc.extract(OcrRequest(bars_image([5], bar_w=450), ("en",)))
        zh = await svc.extract(OcrRequest(bars_image([6], bar_w=450), ("zh",)))
    assert set(en.text.split()) == {"5"}  # every piece read the line (the fake has no seam)
    assert zh.text == "6"
    (en_call,) = npu.rec_calls()
    assert en_call.shape[0] >= 2 and en_call.shape[1:] == (48, 320, 3)
    assert en_call.dtype == "uint8" and set(en_call.ids) == {5}
    (zh_call,) = cpu.rec_calls()
    assert zh_call.shape[:3] == (1, 3, 48) and zh_call.shape[3] > 320
    assert zh_call.dtype == "float32" and zh_call.ids == [6]
    assert all(c.dtype == "uint8" and c.shape[-1] == 3 for c in npu.det_calls())


async def test_concurrent_mixed_languages_equal_sequential(cfg):
    """Requests in English and Chinese at once, sharing detection on the NPU and split by
    language between the devices: every result is the one it gets alone."""
    sizes = [(1, "en"), (5, "zh"), (9, "en"), (3, "zh"), (12, "zh"), (2, "en"), (7, "en"),
             (4, "zh")]
    jobs = [([100 * k + j for j in range(1, n + 1)], lang) for k, (n, lang) in enumerate(sizes, 1)]
    # Room for detection beside two recognition batches on the NPU, so that crops of
    # several requests are waiting whenever a batch is formed.
    npu = npu_device(det_delay=0.002, rec_delay=0.05, max_jobs_in_flight=4)
    cpu = cpu_device(rec_delay=0.05)
    async with mixed_host(cfg, npu, cpu) as svc:
        sequential = [await read(svc, ids, lang) for ids, lang in jobs]
        concurrent: dict[int, list[str]] = {}

        async def client(k, ids, lang):
            concurrent[k] = await read(svc, ids, lang)

        async with trio.open_nursery() as nursery:
            for k, (ids, lang) in enumerate(jobs):
                nursery.start_soon(client, k, ids, lang)
    assert [concurrent[k] for k in range(len(jobs))] == sequential
    assert sequential == [expected(ids) for ids, _ in jobs]
    # The concurrent pass shared batches across requests on both devices.
    assert any(len({i // 100 for i in c.ids if i}) > 1 for c in npu.rec_calls())
    assert any(len({i // 100 for i in c.ids if i}) > 1 for c in cpu.rec_calls())


async def test_a_slow_cpu_batch_does_not_hold_up_the_npu(cfg):
    """The batcher's batches in flight are counted per device: with one batch at a time,
    English on the NPU is read while a Chinese batch occupies the CPU."""
    cfg = with_changes(cfg, batching={"max_batches_in_flight": 1})
    npu, cpu = npu_device(), cpu_device(rec_delay=1.0)
    async with mixed_host(cfg, npu, cpu) as svc, trio.open_nursery() as nursery:
        nursery.start_soon(read, svc, [31, 32], "zh")
        await wait_until(lambda: len(cpu.rec_calls()) == 1)
        start = trio.current_time()
        assert await read(svc, [41], "en") == ["41"]
        assert trio.current_time() - start < 0.5
        assert cpu.rec_calls()[0].result == "running"


async def test_a_backend_must_load_exactly_the_models_placed_on_its_device(cfg):
    cfg = with_changes(cfg, ocr={"languages": ("en",)})
    dev = cpu_device()  # English and Chinese: one more than this configuration places
    with pytest.raises(ModelLoadError, match="loaded detection, recognition_en, recognition_zh "
                                             "but was given detection, recognition_en"):
        async with open_ocr_service(cfg, {CPU: lambda _ids: FakeBackend(dev)}):
            pytest.fail("the service must not start")  # pragma: no cover
    assert dev.open_backends == 0
    with pytest.raises(ValueError, match="no backend factory for device"):
        async with open_ocr_service(cfg, npu_device().factory(NPU)):
            pytest.fail("the service must not start")  # pragma: no cover


# -- faults on either owner ---------------------------------------------------------------------


async def test_a_cpu_fault_leaves_the_npu_serving_and_the_cpu_comes_back(cfg):
    cfg = with_changes(cfg, backend={"restart_backoff_s": 0.6})
    npu, cpu = npu_device(), cpu_device()
    cpu.raise_after(0, DeviceFault("ONNX Runtime lost its arena"))
    async with mixed_host(cfg, npu, cpu) as svc:
        with pytest.raises(DeviceFault, match="arena"):
            await read(svc, [1, 2], "zh")
        faulted = trio.current_time()
        stats = svc.device_statistics()
        assert not stats[CPU].ready and stats[CPU].reason == "device_fault"
        assert stats[NPU].ready
        assert not svc.ready and svc.not_ready_reason == "device_fault"
        # While the CPU restarts: Chinese is refused at once, English goes on on the NPU.
        start = trio.current_time()
        with pytest.raises(NotReady) as refused:
            await read(svc, [3], "zh")
        assert refused.value.reason == "device_fault" and "cpu" in str(refused.value)
        assert trio.current_time() - start < 0.05
        for k in range(3):
            assert await read(svc, [10 + k, 20 + k], "en") == [str(10 + k), str(20 + k)]
        assert trio.current_time() - faulted < 0.6  # all of that inside the backoff
        await wait_until(lambda: svc.ready)
        assert trio.current_time() - faulted >= 0.6
        assert await read(svc, [4, 5], "zh") == ["4", "5"]
        # /health's model_loads as the original counted: one load, then one reload.
        assert svc.statistics().model_loads == 2
        stats = svc.statistics().devices
    assert stats[CPU].restarts == 1 and "arena" in stats[CPU].last_fault
    assert stats[NPU].restarts == 0 and stats[NPU].jobs_failed == 0
    assert cpu.loads == 2 and npu.loads == 1


async def test_an_npu_fault_leaves_the_cpu_serving_and_the_npu_comes_back(cfg):
    """Detection on the CPU here, so Chinese needs nothing from the NPU."""
    cfg = with_changes(cfg, backend={"restart_backoff_s": 0.6})
    npu, cpu = npu_device(), cpu_device()
    npu.lose_after(0, kind="recognition")
    async with mixed_host(cfg, npu, cpu, placement(detection=CPU)) as svc:
        with pytest.raises(DeviceLost):
            await read(svc, [1, 2], "en")
        faulted = trio.current_time()
        assert not svc.device_statistics()[NPU].ready and svc.device_statistics()[CPU].ready
        with pytest.raises(NotReady):
            await read(svc, [3], "en")
        for k in range(3):
            assert await read(svc, [10 + k], "zh") == [str(10 + k)]
        assert trio.current_time() - faulted < 0.6
        await wait_until(lambda: svc.ready)
        assert await read(svc, [4], "en") == ["4"]
        stats = svc.statistics().devices
    assert stats[NPU].restarts == 1 and stats[CPU].restarts == 0
    assert {c.model_id for c in npu.calls} == {"recognition_en"}


async def test_on_a_pi_an_npu_fault_fails_chinese_fast_too_and_the_cpu_owner_is_untouched(cfg):
    """Chinese is detected on the NPU: while the NPU restarts it is refused at once like
    English, and the CPU owner neither faults nor restarts."""
    cfg = with_changes(cfg, backend={"restart_backoff_s": 0.5})
    npu, cpu = npu_device(), cpu_device()
    npu.lose_after(0, kind="detection")
    async with mixed_host(cfg, npu, cpu) as svc:
        with pytest.raises(DeviceLost):
            await read(svc, [1], "zh")
        for lang in ("zh", "en"):
            with pytest.raises(NotReady):
                await read(svc, [2], lang)
        assert svc.device_statistics()[CPU].ready
        await wait_until(lambda: svc.ready)
        assert await read(svc, [3, 4], "zh") == ["3", "4"]
        stats = svc.statistics().devices
    assert stats[CPU].restarts == 0 and stats[CPU].jobs_failed == 0
    assert stats[NPU].restarts == 1


@pytest.mark.parametrize("hung", [NPU, CPU])
async def test_a_hung_device_costs_its_requests_their_deadline_and_no_more(cfg, hung):
    """One device stops answering. Its requests end at their deadline (504), not later;
    the other device's requests are answered meanwhile; after the job timeout the hung
    owner restarts and serves again."""
    cfg = with_changes(
        cfg, server={"request_timeout_s": 0.4},
        backend={"job_timeout_s": 1.0, "restart_backoff_s": 0.05},
    )
    npu, cpu = npu_device(), cpu_device()
    # Detection on the device that does not hang, so the other language needs only that one.
    where = placement(detection=CPU if hung == NPU else NPU)
    victim, victim_lang, other_lang = (npu, "en", "zh") if hung == NPU else (cpu, "zh", "en")
    victim.hang_after(0, 60.0, kind="recognition")
    outcomes: dict[str, object] = {}
    async with mixed_host(cfg, npu, cpu, where) as svc:

        async def timed(name, ids, lang):
            start = trio.current_time()
            try:
                outcomes[name] = await read(svc, ids, lang)
            except Exception as exc:
                outcomes[name] = exc
            outcomes[name + "_s"] = trio.current_time() - start

        async with trio.open_nursery() as nursery:
            nursery.start_soon(timed, "victim", [1, 2], victim_lang)
            await wait_until(lambda: any(c.result == "running" for c in victim.rec_calls()))
            nursery.start_soon(timed, "other", [3, 4], other_lang)
        assert isinstance(outcomes["victim"], RequestTimeout)
        assert outcomes["victim_s"] < 0.4 + 0.2
        assert outcomes["other"] == ["3", "4"] and outcomes["other_s"] < 0.4
        await wait_until(lambda: svc.device_statistics()[hung].restarts == 1, within=3)
        await wait_until(lambda: svc.ready, within=3)
        assert await read(svc, [5], victim_lang) == ["5"]
        stats = svc.statistics()
    assert stats.requests_timed_out == 1
    other = CPU if hung == NPU else NPU
    assert stats.devices[other].restarts == 0
