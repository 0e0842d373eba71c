// The consult room's WebRTC mesh: one RTCPeerConnection per other member of the session,
// signaled through the server (`consult.signal` out, `signal` in).
//
// Who offers: the member who was there first (earlier `since`; the lower user id on a tie)
// creates the connection and offers; the newcomer answers. The server's recorder
// (`kind: "recorder"`, recording contract) is signaled like anyone and gets no tile; a
// renegotiation with it is sent as `renegotiate`, as it takes every `offer` as a new
// connection (docs/realtime.md, consult recording).
// Later changes (screen sharing adds or removes a track) renegotiate by "perfect
// negotiation": either side may offer; on a collision the newcomer (polite) rolls back.
import { markRaw, reactive } from "vue";
import type { PresenceMember } from "../../api/types";
import { emitWithAck, onSocketEvent } from "../../realtime/store";

export type Quality = "unknown" | "good" | "poor" | "bad";

export interface Peer {
  userId: number;
  since: string;
  kind: "person" | "recorder";
  polite: boolean;
  pc: RTCPeerConnection;
  /** Camera and microphone of the member. */
  stream: MediaStream | null;
  /** Their shared screen, while they share it. */
  screen: MediaStream | null;
  quality: Quality;
  rtt: number | null;
  loss: number | null;
  makingOffer: boolean;
  ignoreOffer: boolean;
  lastLost: number;
  lastReceived: number;
  tracksAdded: boolean;
}

interface SignalIn {
  consult_id: number;
  from: number;
  kind: "offer" | "answer" | "candidate" | "renegotiate" | "bye";
  data: Record<string, unknown>;
}

export class Mesh {
  readonly peers = reactive(new Map<number, Peer>());
  private screenTrack: MediaStreamTrack | null = null;
  private screenStream: MediaStream | null = null;
  private statsTimer: ReturnType<typeof setInterval>;
  private closed = false;
  /** The newest presence entry of every other member, as last seen. */
  private known = new Map<number, PresenceMember>();

  constructor(
    private readonly consultId: number,
    private readonly me: number,
    private local: MediaStream | null,
    private iceServers: RTCIceServer[],
  ) {
    this.statsTimer = setInterval(() => void this.measure(), 2_000);
  }

  setIceServers(servers: RTCIceServer[]): void {
    this.iceServers = servers;
  }

  /** Bring the connections in line with the session's members. */
  sync(members: PresenceMember[]): void {
    if (this.closed) return;
    // One entry per joined socket: a member who reloaded may still have their old socket's
    // entry until the server notices it is gone; their newest entry is the live one.
    const latest = new Map<number, PresenceMember>();
    for (const m of members) {
      const seen = latest.get(m.user_id);
      if (!seen || m.since > seen.since) latest.set(m.user_id, m);
    }
    const mine = latest.get(this.me);
    latest.delete(this.me);
    const others = latest;
    this.known = new Map(others);
    this.learn([...others.values()]);
    for (const [userId, peer] of this.peers) {
      const now = others.get(userId);
      // A peer we answered before its presence reached us has no `since` yet: keep it.
      if (peer.since === "") continue;
      if (!now || now.since !== peer.since) this.drop(userId);
    }
    if (!mine) return;
    for (const m of others.values()) {
      if (this.peers.has(m.user_id)) continue;
      if (this.offersTo(mine, m)) this.create(m, false);
    }
  }

  private offersTo(mine: PresenceMember, other: PresenceMember): boolean {
    if (mine.since !== other.since) return mine.since < other.since;
    return this.me < other.user_id;
  }

  private create(member: Pick<PresenceMember, "user_id" | "since" | "kind">, polite: boolean): Peer {
    const pc = markRaw(new RTCPeerConnection({ iceServers: this.iceServers }));
    const peer: Peer = reactive({
      userId: member.user_id,
      since: member.since,
      kind: member.kind ?? "person",
      polite,
      pc,
      stream: null,
      screen: null,
      quality: "unknown",
      rtt: null,
      loss: null,
      makingOffer: false,
      ignoreOffer: false,
      lastLost: 0,
      lastReceived: 0,
      tracksAdded: false,
    }) as Peer;
    this.peers.set(member.user_id, peer);
    const current = () => this.peers.get(member.user_id);
    pc.onicecandidate = ({ candidate }) => {
      if (candidate) void this.send(member.user_id, "candidate", candidate.toJSON() as Record<string, unknown>);
    };
    pc.onnegotiationneeded = async () => {
      const p = current();
      if (!p || p.pc !== pc) return;
      try {
        p.makingOffer = true;
        const renegotiation = pc.currentRemoteDescription !== null;
        await pc.setLocalDescription();
        // The recorder takes every `offer` as a new connection: renegotiate with it by name.
        const kind = renegotiation && p.kind === "recorder" ? "renegotiate" : "offer";
        if (pc.localDescription) await this.send(member.user_id, kind, pc.localDescription.toJSON() as unknown as Record<string, unknown>);
      } catch (error) {
        console.warn("offer failed", error);
      } finally {
        p.makingOffer = false;
      }
    };
    pc.ontrack = ({ track, streams }) => {
      const p = current();
      if (!p) return;
      const stream = markRaw(streams[0] ?? new MediaStream([track]));
      if (!p.stream || p.stream.id === stream.id) p.stream = stream;
      else p.screen = stream;
      stream.onremovetrack = () => {
        if (stream.getTracks().length === 0 && p.screen?.id === stream.id) p.screen = null;
      };
    };
    pc.onconnectionstatechange = () => {
      if (pc.connectionState === "failed") pc.restartIce();
      if (pc.connectionState === "connected") void this.measure(); // a first figure at once
    };
    if (!polite) this.addLocalTracks(peer);
    return peer;
  }

  private addLocalTracks(peer: Peer): void {
    const pc = peer.pc;
    peer.tracksAdded = true;
    if (this.local) for (const track of this.local.getTracks()) pc.addTrack(track, this.local);
    if (this.screenTrack && this.screenStream) pc.addTrack(this.screenTrack, this.screenStream);
  }

  async onSignal(message: SignalIn): Promise<void> {
    if (this.closed || message.consult_id !== this.consultId) return;
    if (message.kind === "bye") {
      this.drop(message.from);
      return;
    }
    let peer = this.peers.get(message.from);
    if (message.kind === "offer" && peer?.kind === "recorder" && peer.pc.currentRemoteDescription) {
      // An offer from the recorder is a new connection (it left and came back).
      this.drop(message.from);
      peer = undefined;
    }
    if (message.kind === "offer" && !peer) {
      // They were here first: answer with our tracks. Their presence entry may have come
      // before their offer (or come next: `sync` learns it then).
      const member = this.known.get(message.from);
      peer = this.create(
        { user_id: message.from, since: member?.since ?? "", kind: member?.kind ?? "person" },
        true,
      );
    }
    if (!peer) return;
    const pc = peer.pc;
    try {
      if (message.kind === "offer" || message.kind === "answer" || message.kind === "renegotiate") {
        const description = message.data as unknown as RTCSessionDescriptionInit;
        const collision = description.type === "offer" && (peer.makingOffer || pc.signalingState !== "stable");
        peer.ignoreOffer = !peer.polite && collision;
        if (peer.ignoreOffer) return;
        await pc.setRemoteDescription(description);
        if (description.type === "offer") {
          if (!peer.tracksAdded) this.addLocalTracks(peer);
          await pc.setLocalDescription();
          if (pc.localDescription) await this.send(message.from, "answer", pc.localDescription.toJSON() as unknown as Record<string, unknown>);
        }
      } else if (message.kind === "candidate") {
        try {
          await pc.addIceCandidate(message.data as RTCIceCandidateInit);
        } catch (error) {
          if (!peer.ignoreOffer) console.warn("ice candidate refused", error);
        }
      }
    } catch (error) {
      console.warn("signal failed", error);
    }
  }

  /** A member whose `since` was unknown (we answered before their presence arrived). */
  learn(members: PresenceMember[]): void {
    for (const m of members) {
      const peer = this.peers.get(m.user_id);
      if (peer && peer.since === "") {
        peer.since = m.since;
        peer.kind = m.kind ?? "person";
      }
    }
  }

  private async send(to: number, kind: string, data: Record<string, unknown>): Promise<void> {
    const ack = await emitWithAck("consult.signal", { consult_id: this.consultId, to, kind, data });
    if (!ack.ok && ack.problem?.code !== "offline") console.warn("signal refused", ack.problem?.detail);
  }

  private drop(userId: number): void {
    const peer = this.peers.get(userId);
    if (!peer) return;
    peer.pc.close();
    this.peers.delete(userId);
  }

  async startScreen(stream: MediaStream): Promise<void> {
    const track = stream.getVideoTracks()[0];
    if (!track) return;
    this.screenStream = stream;
    this.screenTrack = track;
    for (const peer of this.peers.values()) {
      if (peer.tracksAdded) peer.pc.addTrack(track, stream); // renegotiates
    }
  }

  stopScreen(): void {
    const track = this.screenTrack;
    this.screenTrack = null;
    this.screenStream = null;
    if (!track) return;
    track.stop();
    for (const peer of this.peers.values()) {
      const sender = peer.pc.getSenders().find((s) => s.track === track);
      if (sender) peer.pc.removeTrack(sender); // renegotiates
    }
  }

  /** rtt and packet loss from getStats → good / poor / bad. */
  private async measure(): Promise<void> {
    for (const peer of this.peers.values()) {
      if (peer.pc.connectionState !== "connected") {
        peer.quality = peer.pc.connectionState === "failed" ? "bad" : "unknown";
        continue;
      }
      try {
        const report = await peer.pc.getStats();
        let rtt: number | null = null;
        let lost = 0;
        let received = 0;
        report.forEach((s: Record<string, unknown>) => {
          if (s.type === "candidate-pair" && s.state === "succeeded" && s.nominated && typeof s.currentRoundTripTime === "number") {
            rtt = s.currentRoundTripTime;
          }
          if (s.type === "inbound-rtp") {
            lost += Number(s.packetsLost ?? 0);
            received += Number(s.packetsReceived ?? 0);
          }
        });
        const dLost = Math.max(0, lost - peer.lastLost);
        const dReceived = Math.max(0, received - peer.lastReceived);
        peer.lastLost = lost;
        peer.lastReceived = received;
        const loss = dLost + dReceived > 0 ? dLost / (dLost + dReceived) : 0;
        peer.rtt = rtt;
        peer.loss = loss;
        peer.quality = classify(rtt, loss);
      } catch {
        peer.quality = "unknown";
      }
    }
  }

  /** Forget every connection (our socket re-joined: the others offer to us again). */
  reset(): void {
    for (const userId of [...this.peers.keys()]) this.drop(userId);
  }

  close(): void {
    this.closed = true;
    clearInterval(this.statsTimer);
    for (const userId of [...this.peers.keys()]) this.drop(userId);
    this.screenTrack?.stop();
  }
}

export function classify(rtt: number | null, loss: number): Quality {
  const r = rtt ?? 0;
  if (r < 0.3 && loss < 0.02) return "good";
  if (r < 0.8 && loss < 0.08) return "poor";
  return "bad";
}

/**
 * A room's media wiring, the consult room's and the follow-up visit call's: the ICE servers
 * asked of the server, one mesh, and the room's `presence` and `signal` events fed to it
 * (presence shapes the mesh only while `joined()`). Returns the mesh and the functions that
 * stop listening.
 */
export async function connectMesh(opts: {
  consultId: number;
  me: number;
  local: MediaStream | null;
  joined: () => boolean;
  onMembers: (members: PresenceMember[]) => void;
}): Promise<{ mesh: Mesh; stops: Array<() => void> }> {
  let ice: RTCIceServer[] = [];
  const iceAck = await emitWithAck<{ ice_servers: RTCIceServer[] }>("consult.ice_servers", { consult_id: opts.consultId });
  if (iceAck.ok && iceAck.data) ice = iceAck.data.ice_servers;
  const mesh = new Mesh(opts.consultId, opts.me, opts.local, ice);
  const stops = [
    onSocketEvent("presence", (data: { consult_id: number; members: PresenceMember[] }) => {
      if (data.consult_id !== opts.consultId) return;
      opts.onMembers(data.members);
      if (opts.joined()) mesh.sync(data.members);
    }),
    onSocketEvent("signal", (data: Parameters<Mesh["onSignal"]>[0]) => {
      void mesh.onSignal(data);
    }),
  ];
  return { mesh, stops };
}
