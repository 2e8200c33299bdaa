"""Go's encoding/gob as Weave Net 2.8.1 speaks it (FACTS.md §8, §11). Pure: bytes in, values out.

Modules: `descriptors` (types, zero values), `encoder`, `decoder`, `reader` (bounded cursor,
stream framing), `varint` (numbers), `weave_types` (the Go types Weave sends); this package
exports the codec's API.

Types are described by frozen descriptors (`Struct`, `Slice`, `Map`, the predeclared `BOOL` ...);
Python values map to them as:

    BOOL bool, INT/UINT int, FLOAT float, COMPLEX complex, BYTES bytes, STRING str,
    Struct dict[str, Any], Slice/Array list, Map dict -- except a map whose key type is not
    predeclared (Weave: the IPAM Paxos map, keyed by a struct): list[tuple[key, value]], order kept.

Zero values follow Go. The encoder omits zero-valued struct fields, with Go's exceptions: a
non-pointer struct (or array) field is always sent, a pointer struct field (`Field(...,
pointer=True)`) is sent unless None/missing, and a map field is sent unless None/missing, even
when empty (Go omits only nil maps; a live weaver sends an empty IPAM `Paxos` map before any
ring while a "no Paxos" state omits it, so the difference is kept). Decoding with an
`expect` descriptor fills absent fields the way Go leaves them: nil pointer and nil map -> None,
slices -> [], other kinds -> their zero value. So decode-then-encode reproduces Go's bytes.

Strings are UTF-8 with `surrogateescape`: Go strings may hold any bytes and we keep them intact.
"""

from weaved.mesh.gob.decoder import MAX_FIELDS, MAX_TYPES, Decoder, decode_all, decode_one
from weaved.mesh.gob.descriptors import (
    BOOL,
    BYTES,
    COMPLEX,
    FLOAT,
    INT,
    INTERFACE,
    MAX_DEPTH,
    STRING,
    UINT,
    Array,
    Field,
    GobType,
    Map,
    Opaque,
    Primitive,
    Slice,
    Struct,
    zero_value,
)
from weaved.mesh.gob.encoder import Encoder, encode_one
from weaved.mesh.gob.errors import GobError, GobValueError
from weaved.mesh.gob.reader import MAX_DECODED_COST, Reader, message_spans

__all__ = [
    "BOOL",
    "BYTES",
    "COMPLEX",
    "FLOAT",
    "INT",
    "INTERFACE",
    "MAX_DECODED_COST",
    "MAX_DEPTH",
    "MAX_FIELDS",
    "MAX_TYPES",
    "STRING",
    "UINT",
    "Array",
    "Decoder",
    "Encoder",
    "Field",
    "GobError",
    "GobType",
    "GobValueError",
    "Map",
    "Opaque",
    "Primitive",
    "Reader",
    "Slice",
    "Struct",
    "decode_all",
    "decode_one",
    "encode_one",
    "message_spans",
    "zero_value",
]
