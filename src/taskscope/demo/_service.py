"""An order pipeline: TCP front end, a queue, workers, AnyIO enrichment, an audit trail.

A client sends ``ORDER <id> <item> <quantity>`` lines to a TCP server on 127.0.0.1;
the server acknowledges each order and queues it; workers enrich each order (price and
stock looked up concurrently in an AnyIO task group) and store it.

Three mistakes are planted on purpose, each marked ``PLANTED MISTAKE``; taskscope
reports each one at the line that created the task:

1. a fire-and-forget audit task fails and nobody ever retrieves its exception;
2. a background metrics task is never stopped, so it is still pending at exit;
3. a confirmation task is created without keeping a reference and is garbage
   collected while still waiting.
"""

from __future__ import annotations

import asyncio
import gc
import sys
import time
from dataclasses import dataclass, field
from typing import Final

#: How many orders the client sends, and how fast (the demo runs about two seconds).
ORDERS: Final = 30
CLIENT_PAUSE: Final = 0.05
WORKERS: Final = 3
#: The order whose audit record the in-process audit step rejects.
REJECTED_AUDIT: Final = 13
#: The order whose payment confirmation is awaited by an unreferenced task.
UNCONFIRMED: Final = 20


@dataclass
class Order:
    """One order, as it moves through the pipeline."""

    id: int
    item: str
    quantity: int
    price: float = 0.0
    in_stock: bool = False
    notes: list[str] = field(default_factory=list)


class AuditServiceError(ConnectionError):
    """The audit service refused a record."""


class OrderService:
    """The service: a TCP front end feeding a queue drained by worker tasks."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[Order | None] = asyncio.Queue()
        self.stored: dict[int, Order] = {}
        self.audited = 0

    # -- front end --------------------------------------------------------------------

    async def handle_client(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """Read order lines, acknowledge and queue each one."""
        try:
            while line := await reader.readline():
                _, number, item, quantity = line.decode().split()
                order = Order(int(number), item, int(quantity))
                await self.queue.put(order)
                writer.write(f"OK {order.id}\n".encode())
                await writer.drain()
        finally:
            writer.close()
            await writer.wait_closed()

    # -- workers ----------------------------------------------------------------------

    async def worker(self, number: int) -> None:
        """Take orders off the queue until the sentinel (None) arrives."""
        while (order := await self.queue.get()) is not None:
            await self.enrich(order)
            await asyncio.sleep(0.01)  # the store's write latency (the demo keeps orders in memory)
            self.stored[order.id] = order
            # PLANTED MISTAKE 1: fire and forget. Nothing keeps or awaits this task, so
            # when the audit service rejects a record, the exception is never retrieved.
            asyncio.create_task(self.send_audit(order))  # noqa: RUF006  # planted: unretrieved
            if order.id == UNCONFIRMED:
                # PLANTED MISTAKE 3: no reference is kept to this task, and the future it
                # waits on is referenced only by the task itself: the garbage collector
                # destroys both while the task is still pending.
                asyncio.create_task(self.wait_for_confirmation(order))  # noqa: RUF006  # planted: destroyed
        self.queue.task_done()

    async def enrich(self, order: Order) -> None:
        """Look the price and the stock up concurrently."""
        try:
            import anyio
        except ImportError:  # the anyio extra is missing: the same with asyncio alone
            async with asyncio.TaskGroup() as group:
                group.create_task(self.lookup_price(order))
                group.create_task(self.lookup_stock(order))
            return
        async with anyio.create_task_group() as group:
            group.start_soon(self.lookup_price, order)
            group.start_soon(self.lookup_stock, order)

    async def lookup_price(self, order: Order) -> None:
        """Look the price up in the in-process catalogue (with a lookup delay)."""
        await asyncio.sleep(0.02)
        order.price = 9.5 * order.quantity

    async def lookup_stock(self, order: Order) -> None:
        """Check the in-process stock table (with a lookup delay)."""
        await asyncio.sleep(0.015)
        order.in_stock = order.quantity < 5

    async def send_audit(self, order: Order) -> None:
        """Audit the order (in process); one order is rejected on purpose."""
        await asyncio.sleep(0.005)
        if order.id == REJECTED_AUDIT:
            raise AuditServiceError(f"audit service rejected order {order.id}")
        self.audited += 1

    async def wait_for_confirmation(self, order: Order) -> None:
        """Wait for the payment provider's confirmation (which never comes)."""
        confirmation = asyncio.get_running_loop().create_future()
        order.notes.append(await confirmation)

    async def report_metrics(self) -> None:
        """Log the queue length every half second, forever."""
        while True:
            await asyncio.sleep(0.5)
            print(f"metrics: {len(self.stored)} stored, {self.queue.qsize()} queued", flush=True)

    # -- the whole service ------------------------------------------------------------

    async def run(self) -> None:
        """Serve one client's orders, then shut down."""
        # PLANTED MISTAKE 2: a background task that nothing ever cancels or awaits; it
        # is still pending when the program ends.
        self.metrics = asyncio.create_task(self.report_metrics())  # planted: pending
        workers = [asyncio.create_task(self.worker(n), name=f"worker-{n}") for n in range(WORKERS)]
        server = await asyncio.start_server(self.handle_client, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        print(f"order service listening on 127.0.0.1:{port}", flush=True)
        async with server:
            await client(port, ORDERS)
            for _ in workers:
                await self.queue.put(None)
            await asyncio.gather(*workers)
        await asyncio.sleep(0.05)  # let the last audit records go out
        # A real program loses the unreferenced task at the next garbage collection, at
        # a random moment; the demo collects now so that it happens every time.
        gc.collect()


async def client(port: int, count: int) -> None:
    """Send `count` orders and read every acknowledgement."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    items = ("tea", "coffee", "cocoa")
    for number in range(1, count + 1):
        writer.write(f"ORDER {number} {items[number % 3]} {number % 7 + 1}\n".encode())
        await writer.drain()
        reply = await reader.readline()
        if not reply.startswith(b"OK"):
            raise RuntimeError(f"order {number} was refused: {reply!r}")
        await asyncio.sleep(CLIENT_PAUSE)
    writer.close()
    await writer.wait_closed()


def main() -> None:
    """Run the service once (about two seconds) and print what it did."""
    started = time.perf_counter()
    service = OrderService()
    asyncio.run(service.run())
    print(
        f"processed {len(service.stored)} orders, audited {service.audited}, "
        f"in {time.perf_counter() - started:.1f} s",
        file=sys.stdout,
    )
