"""Pure logic: data in, data out. Nothing here touches SQL, HTTP or the clock."""
