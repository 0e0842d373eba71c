// The reference peer: a plain Socket.IO 4 server doing the benchmark's work.
//   join {room}          -> the socket enters the room; ack {ok: true}
//   msg  {room, ...}     -> relayed to the rest of the room as "msg"; ack {ok: true}
//   echo <anything>      -> ack {ok: true, data}
// Usage: node server.js <port>
const { Server } = require("socket.io");

const port = parseInt(process.argv[2] || "3001", 10);
const io = new Server(port, { transports: ["websocket"], maxHttpBufferSize: 1e6 });

io.on("connection", (socket) => {
  socket.on("join", (data, ack) => {
    socket.join(data.room);
    if (ack) ack({ ok: true, data: { room: data.room } });
  });
  socket.on("msg", (data, ack) => {
    socket.to(data.room).emit("msg", data);
    if (ack) ack({ ok: true, data: null });
  });
  socket.on("echo", (data, ack) => {
    if (ack) ack({ ok: true, data });
  });
});

process.on("SIGTERM", () => io.close(() => process.exit(0)));
console.log(`ready ${port}`);
