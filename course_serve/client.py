"""A small Python client for course_serve, and its command line.

    python -m course_serve.client generate "ROMEO:" --tokens 80 --stream
    python -m course_serve.client classify digit.png
    python -m course_serve.client --url http://127.0.0.1:8080 health

In code::

    with Client("http://127.0.0.1:8000") as client:
        print(client.generate("ROMEO:\\n", max_new_tokens=40, seed=1)["text"])
        for piece in client.stream("JULIET:\\n", max_new_tokens=40):
            print(piece, end="", flush=True)

A 503 (the server is full) is retried after its ``Retry-After`` seconds, a few times; any other
error status raises :class:`ServiceError` with the server's ``detail`` (what to fix).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx


class ServiceError(Exception):
    """An error answer: ``status`` and the server's ``detail``."""

    def __init__(self, status: int, detail: str):
        super().__init__(f"{status}: {detail}")
        self.status, self.detail = status, detail


class Client:
    """Calls one course_serve server; a context manager (one keep-alive connection)."""

    def __init__(self, url: str = "http://127.0.0.1:8000", timeout: float = 120, retries: int = 3):
        self.http = httpx.Client(base_url=url, timeout=timeout)
        self.retries = retries

    def request(self, method: str, path: str, **kwargs) -> httpx.Response:
        for attempt in range(self.retries + 1):
            reply = self.http.request(method, path, **kwargs)
            if reply.status_code != 503 or attempt == self.retries:
                break
            time.sleep(float(reply.headers.get("retry-after", 1)))
        if reply.status_code >= 400:
            raise ServiceError(reply.status_code, error_detail(reply))
        return reply

    def health(self) -> dict:
        return self.request("GET", "/health").json()

    def classify(self, png: bytes) -> dict:
        """``{"digit": ..., "probabilities": [...]}`` for the bytes of a 28x28 PNG."""
        return self.request("POST", "/classify", content=png,
                            headers={"content-type": "image/png"}).json()  # fmt: skip

    def generate(self, prompt: str, **settings) -> dict:
        """``{"text", "new_tokens", "seed"}``; settings: max_new_tokens, temperature, top_k,
        seed."""
        return self.request("POST", "/generate", json={"prompt": prompt, **settings}).json()

    def stream(self, prompt: str, **settings) -> Iterator[str]:
        """Each new character as the server generates it."""
        body = {"prompt": prompt, **settings, "stream": True}
        with self.http.stream("POST", "/generate", json=body) as reply:
            if reply.status_code >= 400:
                reply.read()
                raise ServiceError(reply.status_code, error_detail(reply))
            name = None
            for line in reply.iter_lines():
                if line.startswith("event: "):
                    name = line[len("event: ") :]
                elif line.startswith("data: "):
                    data = json.loads(line[len("data: ") :])
                    if name == "token":
                        yield data["text"]
                    elif name == "error":
                        raise ServiceError(500, data["detail"])

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def error_detail(reply: httpx.Response) -> str:
    try:
        return reply.json()["detail"]
    except (ValueError, KeyError, TypeError):
        return reply.text[:200]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m course_serve.client", description=__doc__)
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("health")
    classify = commands.add_parser("classify")
    classify.add_argument("png", type=Path)
    generate = commands.add_parser("generate")
    generate.add_argument("prompt")
    generate.add_argument("--tokens", type=int, help="how many characters (server default: 100)")
    generate.add_argument("--temperature", type=float, default=0.8)
    generate.add_argument("--seed", type=int)
    generate.add_argument("--stream", action="store_true")
    args = parser.parse_args(argv)
    try:
        with Client(args.url) as client:
            if args.command == "health":
                print(json.dumps(client.health(), indent=2))
            elif args.command == "classify":
                print(json.dumps(client.classify(args.png.read_bytes())))
            else:
                settings = {"max_new_tokens": args.tokens, "temperature": args.temperature,
                            "seed": args.seed}  # fmt: skip
                settings = {k: v for k, v in settings.items() if v is not None}
                if args.stream:
                    for piece in client.stream(args.prompt, **settings):
                        print(piece, end="", flush=True)
                    print()
                else:
                    print(client.generate(args.prompt, **settings)["text"])
    except (ServiceError, httpx.HTTPError, OSError) as error:
        print(f"course_serve.client: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
