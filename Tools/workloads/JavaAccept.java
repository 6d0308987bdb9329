// A Java server at work, for checkpoint tests: a thread blocked in ServerSocket.accept() most of
// the time, serving each connection on a thread of its own; worker threads filling and scanning
// long arrays; the main thread connecting as a client once a step. Every printed line depends on
// every step before it, so a restore that lost or repeated anything prints other lines than a
// plain run.
//
//   java JavaAccept.java STEPS      (or javac, then java -cp DIR JavaAccept STEPS)
import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.io.PrintWriter;
import java.net.InetAddress;
import java.net.ServerSocket;
import java.net.Socket;
import java.security.MessageDigest;
import java.util.HexFormat;

public class JavaAccept {
    static String sha(String s) throws Exception {
        return HexFormat.of().formatHex(MessageDigest.getInstance("SHA-256").digest(s.getBytes("UTF-8")));
    }

    public static void main(String[] args) throws Exception {
        int steps = args.length > 0 ? Integer.parseInt(args[0]) : 40;
        ServerSocket server = new ServerSocket(0, 8, InetAddress.getLoopbackAddress());
        Thread acceptor = new Thread(() -> {
            try {
                while (true) {
                    Socket s = server.accept();
                    new Thread(() -> {
                        try (s; BufferedReader in = new BufferedReader(new InputStreamReader(s.getInputStream()));
                             PrintWriter out = new PrintWriter(s.getOutputStream(), true)) {
                            String line = in.readLine();
                            out.println(sha("served " + line));
                        } catch (Exception e) {
                            System.out.println("serving failed: " + e);
                        }
                    }, "server-connection").start();
                }
            } catch (Exception e) {
                // the server socket closed at the end
            }
        }, "acceptor");
        acceptor.setDaemon(true);
        acceptor.start();

        long[][] arrays = new long[4][1 << 18];
        long[] sums = new long[4];
        String state = sha("start");
        for (int i = 0; i < steps; i++) {
            Thread[] workers = new Thread[4];
            final int step = i;
            for (int w = 0; w < 4; w++) {
                final int k = w;
                workers[w] = new Thread(() -> {
                    long[] a = arrays[k];
                    for (int j = 0; j < a.length; j++) a[j] = a[j] * 31 + j + step + k;
                    long s = 0;
                    for (long v : a) s += v;
                    sums[k] = s;
                }, "worker-" + w);
                workers[w].start();
            }
            for (Thread t : workers) t.join();
            try (Socket c = new Socket(InetAddress.getLoopbackAddress(), server.getLocalPort());
                 PrintWriter out = new PrintWriter(c.getOutputStream(), true);
                 BufferedReader in = new BufferedReader(new InputStreamReader(c.getInputStream()))) {
                out.println(state + " " + sums[0] + " " + sums[1] + " " + sums[2] + " " + sums[3]);
                state = sha(state + in.readLine());
            }
            System.out.println("step " + i + " " + state.substring(0, 16));
            Thread.sleep(60);
        }
        server.close();
        System.out.println("done after " + steps + " steps");
    }
}
