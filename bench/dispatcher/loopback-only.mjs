// Preloaded into the Portkey gateway (`node --import`): it calls server.listen(port) without
// a host, which would bind every interface. Force loopback so the bench never listens beyond
// 127.0.0.1.
import net from 'node:net'

const listen = net.Server.prototype.listen
net.Server.prototype.listen = function loopbackListen(...args) {
  if (typeof args[0] === 'number' || typeof args[0] === 'string') {
    if (args[1] === undefined || args[1] === null) args[1] = '127.0.0.1'
    else if (typeof args[1] === 'function') args.splice(1, 0, '127.0.0.1')
  } else if (args[0] && typeof args[0] === 'object' && !args[0].host && !args[0].path) {
    args[0] = { ...args[0], host: '127.0.0.1' }
  }
  return listen.apply(this, args)
}
