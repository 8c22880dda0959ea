import trio

from lash_machine import ModelSpec, SessionPolicy
from lash_machine.drivers.trio import Driver
from lash_machine.stores import SQLiteStore


async def main() -> None:
    driver = Driver(SQLiteStore("sessions.db"))
    session = await driver.open(SessionPolicy(ModelSpec("gpt-4o"), provider_id="openai"))
    await session.append({"role": "user", "content": "hello"})
    parked = await session.park()  # a small handle: keep it between requests
    session = await driver.resume(parked)
    print(session.view.head_revision, session.view.resident_nodes)


trio.run(main)
