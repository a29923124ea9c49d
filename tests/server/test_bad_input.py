"""The bad-input matrix: every kind of bad request gets its own clear status, never INTERNAL,
writes nothing, and leaves the server serving."""

import io
import struct
import zlib

import grpc
import pytest
from PIL import Image
from sqlalchemy import func, select

from origin_id.indexer.store.schema import embeddings, references
from origin_id.server.api.origin.v1 import origin_pb2 as pb
from tests.indexer.test_decode import png_header_only

BAD, BIG, MISSING, CLASH = (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED,
                            grpc.StatusCode.NOT_FOUND, grpc.StatusCode.ALREADY_EXISTS)
#: Not a valid protobuf message: field 1, length-delimited, with a length past the end.
MALFORMED = b"\x0a\xff\xff\xff\xff\x0f"


def _encoded(fmt: str, size=(32, 32)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (120, 30, 200)).save(buf, format=fmt)
    return buf.getvalue()


def _jpeg_header(width: int, height: int) -> bytes:
    """A JPEG start declaring ``width`` x ``height`` and nothing else."""
    sof = b"\xff\xc0" + struct.pack(">HBHHB", 17, 8, height, width, 3) + b"\x01\x11\x00\x02\x11\x01\x03\x11\x01"
    return b"\xff\xd8" + sof + b"\xff\xd9"


def _png_chunks_only() -> bytes:
    ihdr = struct.pack(">IIBBBBB", 64, 64, 8, 2, 0, 0, 0)
    chunk = struct.pack(">I", len(ihdr)) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return b"\x89PNG\r\n\x1a\n" + chunk + struct.pack(">I", 0) + b"IEND" + struct.pack(">I", zlib.crc32(b"IEND"))


GOOD = _encoded("JPEG", (96, 96))
#: (what is wrong, the image bytes, the status).
IMAGES = [
    ("empty image", b"", BAD),
    ("truncated JPEG", _encoded("JPEG", (256, 256))[:300], BAD),
    ("truncated PNG", _encoded("PNG", (256, 256))[:100], BAD),
    ("PNG with no pixel data", _png_chunks_only(), BAD),
    ("random bytes", bytes(range(256)) * 4, BAD),
    ("a PDF", b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\n", BAD),
    ("an SVG", b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>', BAD),
    ("HTML", b"<!doctype html><html><body>hi</body></html>", BAD),
    ("PPM (unsupported format)", _encoded("PPM"), BAD),
    ("ICO (unsupported format)", _encoded("ICO", (16, 16)), BAD),
    ("PNG of 7999 x 7999 (decoded whole)", png_header_only(7999, 7999), BIG),
    ("PNG of 19000 x 19000", png_header_only(19_000, 19_000), BIG),
    ("JPEG declaring 30000 x 30000", _jpeg_header(30_000, 30_000), BIG),
    ("JPEG declaring 9000 x 9000 (over 64 Mpx)", _jpeg_header(9000, 9000), BIG),
]
TEXTS = {"NUL": "a\x00b", "newline": "a\nb", "escape": "a\x1b[31mb", "tab": "a\tb", "DEL": "a\x7fb"}


def identify_cases():
    cases = [(f"identify: {what}", "IdentifyOrigin", pb.IdentifyOriginRequest(image=data), code)
             for what, data, code in IMAGES]
    cases += [(f"identify: collection with {name}", "IdentifyOrigin",
               pb.IdentifyOriginRequest(image=GOOD, collection=text), BAD) for name, text in TEXTS.items()]
    cases += [
        ("identify: top_k -1", "IdentifyOrigin", pb.IdentifyOriginRequest(image=GOOD, top_k=-1), BAD),
        ("identify: top_k 100000", "IdentifyOrigin", pb.IdentifyOriginRequest(image=GOOD, top_k=100_000), BAD),
        ("identify: collection of 10 KB", "IdentifyOrigin",
         pb.IdentifyOriginRequest(image=GOOD, collection="c" * 10_000), BAD),
        ("identify: unknown collection", "IdentifyOrigin",
         pb.IdentifyOriginRequest(image=GOOD, collection="nowhere"), MISSING),
    ]
    return cases


def _add(**fields) -> pb.AddReferenceRequest:
    return pb.AddReferenceRequest(image=GOOD, **fields)


def add_cases():
    cases = [(f"add: {what}", "AddReference", pb.AddReferenceRequest(image=data), code)
             for what, data, code in IMAGES]
    for field in ("external_id", "source_uri", "collection"):
        cases += [(f"add: {field} with {name}", "AddReference",
                   pb.AddReferenceRequest(image=GOOD, **{field: text}), BAD) for name, text in TEXTS.items()]
    cases += [(f"add: label key with {name}", "AddReference",
               pb.AddReferenceRequest(image=GOOD, labels={text: "v"}), BAD) for name, text in list(TEXTS.items())[:2]]
    cases += [(f"add: label value with {name}", "AddReference",
               pb.AddReferenceRequest(image=GOOD, labels={"k": text}), BAD) for name, text in list(TEXTS.items())[:2]]
    cases += [
        ("add: external_id of 600 characters", "AddReference", _add(external_id="e" * 600), BAD),
        ("add: source_uri of 3000 characters", "AddReference", _add(source_uri="s" * 3000), BAD),
        ("add: collection of 200 characters", "AddReference", _add(collection="c" * 200), BAD),
        ("add: empty label key", "AddReference", _add(labels={"": "v"}), BAD),
        ("add: label key of 200 characters", "AddReference", _add(labels={"k" * 200: "v"}), BAD),
        ("add: label value of 2000 characters", "AddReference", _add(labels={"k": "v" * 2000}), BAD),
        ("add: 65 labels", "AddReference", _add(labels={f"k{i}": "v" for i in range(65)}), BAD),
        ("add: external_id naming another image", "AddReference",
         pb.AddReferenceRequest(image=_encoded("PNG", (40, 40)), external_id="taken"), CLASH),
        ("add: a source_uri of 17 MB", "AddReference", _add(source_uri="s" * 17_000_000), BIG),
    ]
    return cases


def lookup_cases():
    cases = []
    for method, request in (("GetReference", pb.GetReferenceRequest), ("DeleteReference", pb.DeleteReferenceRequest)):
        verb = method[:3].lower()
        cases += [
            (f"{verb}: neither id nor external key", method, request(), BAD),
            (f"{verb}: unknown id", method, request(id=987_654_321), MISSING),
            (f"{verb}: negative id", method, request(id=-4), MISSING),
            (f"{verb}: empty external_id", method, request(external=pb.ExternalKey(collection="default")), BAD),
            (f"{verb}: external_id with NUL", method, request(external=pb.ExternalKey(external_id="a\x00")), BAD),
            (f"{verb}: collection with NUL", method,
             request(external=pb.ExternalKey(collection="a\x00", external_id="x")), BAD),
            (f"{verb}: external_id of 10 KB", method, request(external=pb.ExternalKey(external_id="x" * 10_000)), BAD),
            (f"{verb}: collection of 10 KB", method,
             request(external=pb.ExternalKey(collection="c" * 10_000, external_id="x")), BAD),
            (f"{verb}: unknown external_id", method, request(external=pb.ExternalKey(external_id="nope")), MISSING),
        ]
    cases += [
        ("list: page_size -1", "ListReferences", pb.ListReferencesRequest(page_size=-1), BAD),
        ("list: page_size 1001", "ListReferences", pb.ListReferencesRequest(page_size=1001), BAD),
        ("list: page_token not ours", "ListReferences", pb.ListReferencesRequest(page_token="abc"), BAD),
        ("list: page_token of 40 digits", "ListReferences", pb.ListReferencesRequest(page_token="9" * 40), BAD),
        ("list: negative page_token", "ListReferences", pb.ListReferencesRequest(page_token="-5"), BAD),
        ("list: collection with NUL", "ListReferences", pb.ListReferencesRequest(collection="a\x00"), BAD),
        ("list: collection of 10 KB", "ListReferences", pb.ListReferencesRequest(collection="c" * 10_000), BAD),
        ("list: unknown collection", "ListReferences", pb.ListReferencesRequest(collection="nowhere"), MISSING),
    ]
    return cases


def malformed_cases():
    methods = ["IdentifyOrigin", "AddReference", "GetReference", "ListReferences", "DeleteReference", "GetIndexStats"]
    return [(f"{m}: malformed protobuf", m, MALFORMED, BAD) for m in methods]


CASES = identify_cases() + add_cases() + lookup_cases() + malformed_cases()


def test_the_matrix_has_at_least_80_kinds():
    assert len(CASES) >= 80 and len({name for name, *_ in CASES}) == len(CASES)


@pytest.fixture
def seeded(client, origin):
    """One stored reference (so queries are not refused as an empty index), and the row counts."""
    client.add(GOOD, external_id="taken")

    def counts():
        with origin.store.engine.connect() as conn:
            return (conn.execute(select(func.count()).select_from(references)).scalar_one(),
                    conn.execute(select(func.count()).select_from(embeddings)).scalar_one())
    return counts


@pytest.mark.parametrize(("name", "method", "request_", "code"), CASES, ids=[c[0] for c in CASES])
def test_each_bad_request_gets_its_status_and_writes_nothing(client, seeded, name, method, request_, code):
    before = seeded()
    send = client.channel.unary_unary(f"/origin.v1.OriginService/{method}",
                                      request_serializer=lambda r: r if isinstance(r, bytes) else r.SerializeToString(),
                                      response_deserializer=lambda b: b)
    with pytest.raises(grpc.RpcError) as info:
        send(request_, timeout=30)
    assert info.value.code() == code, f"{name}: {info.value.code()} {info.value.details()}"
    assert len(info.value.details() or "") <= 500
    assert seeded() == before
    assert client.health_status() == "SERVING"


def test_bad_items_of_a_stream_are_their_own_errors_and_the_good_ones_land(client, seeded, origin):
    before = seeded()
    good = [_encoded("PNG", (50 + i, 50)) for i in range(3)]
    stream = [pb.AddReferenceRequest(image=good[0]), pb.AddReferenceRequest(image=GOOD, external_id="a\x00"),
              pb.AddReferenceRequest(image=good[1]), pb.AddReferenceRequest(image=b"junk"),
              pb.AddReferenceRequest(image=GOOD, labels={"k": "v" * 5000}), pb.AddReferenceRequest(image=good[2])]
    replies = list(client.add_many(stream))
    assert [r.HasField("error") for r in replies] == [False, True, False, True, True, False]
    assert all(r.error.code == BAD.value[0] for r in replies if r.HasField("error"))
    per_reference = 1 + len(origin.settings.region_layout)  # a vector row per region
    assert seeded() == (before[0] + 3, before[1] + 3 * per_reference)
