"""The little OSC (1.0) this Remote Script needs: messages with int, float and string
arguments, and bundles read as the messages in them. Live's Python cannot pip-install."""
import struct


def _pad(data):
    return data + b"\0" * (4 - len(data) % 4)


def _string(text):
    return _pad(text.encode("utf-8"))


def encode(address, args=()):
    """An OSC message: ints as ``i``, floats as ``f``, strings as ``s``."""
    tags, payload = ",", b""
    for a in args:
        if isinstance(a, bool) or isinstance(a, int):
            tags += "i"
            payload += struct.pack(">i", int(a))
        elif isinstance(a, float):
            tags += "f"
            payload += struct.pack(">f", a)
        elif isinstance(a, str):
            tags += "s"
            payload += _string(a)
        else:
            raise TypeError("OSC argument %r: int, float or str" % (a,))
    return _string(address) + _string(tags) + payload


def _read_string(data, pos):
    end = data.index(b"\0", pos)
    text = data[pos:end].decode("utf-8", "replace")
    return text, (end // 4 + 1) * 4


def decode(data):
    """The messages in a datagram, [(address, [args])]; a malformed one yields nothing."""
    try:
        if data.startswith(b"#bundle\0"):
            out, pos = [], 16
            while pos + 4 <= len(data):
                (size,) = struct.unpack(">i", data[pos:pos + 4])
                if size <= 0 or pos + 4 + size > len(data):  # malformed: a size that does not move on
                    break
                out.extend(decode(data[pos + 4:pos + 4 + size]))
                pos += 4 + size
            return out
        address, pos = _read_string(data, 0)
        if not address.startswith("/"):
            return []
        if pos >= len(data):
            return [(address, [])]
        tags, pos = _read_string(data, pos)
        args = []
        for tag in tags[1:]:
            if tag == "i":
                args.append(struct.unpack(">i", data[pos:pos + 4])[0])
                pos += 4
            elif tag == "f":
                args.append(struct.unpack(">f", data[pos:pos + 4])[0])
                pos += 4
            elif tag == "d":
                args.append(struct.unpack(">d", data[pos:pos + 8])[0])
                pos += 8
            elif tag == "h":
                args.append(struct.unpack(">q", data[pos:pos + 8])[0])
                pos += 8
            elif tag == "s":
                text, pos = _read_string(data, pos)
                args.append(text)
            elif tag in "TF":
                args.append(tag == "T")
            else:
                return []  # a type we do not read: skip the message
        return [(address, args)]
    except (ValueError, struct.error):
        return []
