// The reference peer: a plain Socket.IO 4 server doing the benchmark's work.
//   connect auth {token} -> refused without one; the socket enters user:<token>
//   join {room}          -> the socket enters the room; ack {ok: true}
//   msg  {room, ...}     -> relayed to the rest of the room as "msg"; ack {ok: true}
//   echo <anything>      -> ack {ok: true, data}
// Usage: node server.js <port> [--deflate]
//   --deflate: accept per-message deflate (Socket.IO 4's default is off, as Yihao's).
const { createServer } = require("http");
const { Server } = require("socket.io");

const port = parseInt(process.argv[2] || "3001", 10);
const deflate = process.argv.includes("--deflate");
const httpServer = createServer();
const io = new Server(httpServer, {
  transports: ["websocket"],
  maxHttpBufferSize: 1e6,
  perMessageDeflate: deflate ? { threshold: 1024 } : false,
});

io.use((socket, next) => {
  const token = socket.handshake.auth && socket.handshake.auth.token;
  if (typeof token !== "string" || !token) return next(new Error("send auth: {token}"));
  socket.data.user = token;
  next();
});

io.on("connection", (socket) => {
  socket.join(`user:${socket.data.user}`);
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
// Loopback only, as the Yihao side: a port of all addresses can collide with the load
// generators' sockets on other loopback addresses. Ready once listening.
httpServer.listen(port, "127.0.0.1", () => console.log(`ready ${port}`));
