"""Produce records as a non-Python client can: Kafka header names as raw bytes.

The protocol allows any bytes in a header name (Go's sarama and franz-go take ``[]byte``), but
confluent-kafka's Producer only takes ``str`` names, always valid UTF-8. The consumer's own
confluent-kafka raises from ``Message.headers()`` for such a record (a ``SystemError`` caused by a
``UnicodeDecodeError``), which is the one real input that makes a delivery crash. This calls librdkafka,
the copy bundled with confluent-kafka, through ``rd_kafka_produceva`` (no varargs, so ctypes can call it
safely).
"""

from __future__ import annotations

import ctypes
import glob
import os
from collections.abc import Iterable, Sequence
from typing import Any

import confluent_kafka

# rd_kafka_vtype_t (rdkafka.h)
_TOPIC, _PARTITION, _VALUE, _KEY, _MSGFLAGS, _HEADER = 1, 3, 4, 5, 7, 9
_MSG_F_COPY = 0x2
_PRODUCER = 0


class _Mem(ctypes.Structure):
    _fields_ = [("ptr", ctypes.c_void_p), ("size", ctypes.c_size_t)]


class _Header(ctypes.Structure):
    _fields_ = [("name", ctypes.c_char_p), ("val", ctypes.c_void_p), ("size", ctypes.c_ssize_t)]


class _U(ctypes.Union):
    _fields_ = [("cstr", ctypes.c_char_p), ("i32", ctypes.c_int32), ("i", ctypes.c_int), ("mem", _Mem),
                ("header", _Header), ("_pad", ctypes.c_char * 64)]


class _Message(ctypes.Structure):  # rd_kafka_message_t, the fields a delivery report reads
    _fields_ = [("err", ctypes.c_int), ("rkt", ctypes.c_void_p), ("partition", ctypes.c_int32),
                ("payload", ctypes.c_void_p), ("len", ctypes.c_size_t), ("key", ctypes.c_void_p),
                ("key_len", ctypes.c_size_t), ("offset", ctypes.c_int64), ("_private", ctypes.c_void_p)]


_DeliveryReport = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.POINTER(_Message), ctypes.c_void_p)


class _Vu(ctypes.Structure):
    _fields_ = [("vtype", ctypes.c_int), ("u", _U)]


def _add(vus: list[_Vu], vtype: int) -> _Vu:
    vu = _Vu(vtype=vtype)
    vus.append(vu)
    return vu


def _librdkafka() -> ctypes.CDLL:
    libs = os.path.join(os.path.dirname(os.path.dirname(confluent_kafka.__file__)), "confluent_kafka.libs")
    found = sorted(glob.glob(os.path.join(libs, "librdkafka*.so*")))
    if not found:
        raise RuntimeError(f"no bundled librdkafka in {libs}")
    lib = ctypes.CDLL(found[0])
    lib.rd_kafka_conf_new.restype = ctypes.c_void_p
    lib.rd_kafka_conf_set.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p,
                                      ctypes.c_size_t]
    lib.rd_kafka_conf_set_dr_msg_cb.argtypes = [ctypes.c_void_p, _DeliveryReport]
    lib.rd_kafka_err2str.restype = ctypes.c_char_p
    lib.rd_kafka_err2str.argtypes = [ctypes.c_int]
    lib.rd_kafka_new.restype = ctypes.c_void_p
    lib.rd_kafka_new.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t]
    lib.rd_kafka_produceva.restype = ctypes.c_void_p
    lib.rd_kafka_produceva.argtypes = [ctypes.c_void_p, ctypes.POINTER(_Vu), ctypes.c_size_t]
    lib.rd_kafka_error_string.restype = ctypes.c_char_p
    lib.rd_kafka_error_string.argtypes = [ctypes.c_void_p]
    lib.rd_kafka_error_destroy.argtypes = [ctypes.c_void_p]
    lib.rd_kafka_flush.argtypes = [ctypes.c_void_p, ctypes.c_int]
    lib.rd_kafka_outq_len.argtypes = [ctypes.c_void_p]
    lib.rd_kafka_destroy.argtypes = [ctypes.c_void_p]
    return lib


Record = tuple[int, bytes | None, bytes, Sequence[tuple[bytes, bytes]]]


def produce_raw(bootstrap: str, topic: str, records: Iterable[Record], timeout_s: float = 30.0) -> None:
    """Produce ``(partition, key, value, [(header name bytes, value bytes), ...])`` in order, acks=all,
    then flush; raises if anything is left undelivered."""
    lib = _librdkafka()
    err = ctypes.create_string_buffer(512)
    conf = lib.rd_kafka_conf_new()
    for name, setting in (("bootstrap.servers", bootstrap), ("acks", "all")):
        if lib.rd_kafka_conf_set(conf, name.encode(), setting.encode(), err, len(err)) != 0:
            raise RuntimeError(f"librdkafka config {name}: {err.value.decode()}")
    delivered: list[int] = []
    failed: list[str] = []

    def report(_rk: int, msg: Any, _opaque: int) -> None:
        m = msg.contents
        if m.err:
            failed.append(lib.rd_kafka_err2str(m.err).decode())
        else:
            delivered.append(m.offset)

    callback = _DeliveryReport(report)  # kept alive until the producer is destroyed
    lib.rd_kafka_conf_set_dr_msg_cb(conf, callback)
    rk = lib.rd_kafka_new(_PRODUCER, conf, err, len(err))
    if not rk:
        raise RuntimeError(f"librdkafka producer: {err.value.decode()}")
    sent = 0
    try:
        for partition, key, value, headers in records:
            sent += 1
            keep: list[object] = []
            vus: list[_Vu] = []

            _add(vus, _TOPIC).u.cstr = topic.encode()
            _add(vus, _PARTITION).u.i32 = partition
            vbuf = ctypes.create_string_buffer(value, len(value))
            keep.append(vbuf)
            vu = _add(vus, _VALUE)
            vu.u.mem.ptr, vu.u.mem.size = ctypes.cast(vbuf, ctypes.c_void_p), len(value)
            if key is not None:
                kbuf = ctypes.create_string_buffer(key, len(key))
                keep.append(kbuf)
                vu = _add(vus, _KEY)
                vu.u.mem.ptr, vu.u.mem.size = ctypes.cast(kbuf, ctypes.c_void_p), len(key)
            _add(vus, _MSGFLAGS).u.i = _MSG_F_COPY
            for hname, hvalue in headers:
                nbuf, hbuf = ctypes.create_string_buffer(hname), ctypes.create_string_buffer(hvalue, len(hvalue))
                keep += [nbuf, hbuf]
                vu = _add(vus, _HEADER)
                vu.u.header.name = ctypes.cast(nbuf, ctypes.c_char_p)
                vu.u.header.val, vu.u.header.size = ctypes.cast(hbuf, ctypes.c_void_p), len(hvalue)
            arr = (_Vu * len(vus))(*vus)
            e = lib.rd_kafka_produceva(rk, arr, len(vus))
            if e:
                text = lib.rd_kafka_error_string(e).decode()
                lib.rd_kafka_error_destroy(e)
                raise RuntimeError(f"produce to {topic}[{partition}]: {text}")
        lib.rd_kafka_flush(rk, int(timeout_s * 1000))
        left = lib.rd_kafka_outq_len(rk)
        if left or failed or len(delivered) != sent:
            raise RuntimeError(f"{topic}: {len(delivered)} of {sent} record(s) delivered in {timeout_s} s "
                               f"({left} queued; errors: {sorted(set(failed))})")
    finally:
        lib.rd_kafka_destroy(rk)
